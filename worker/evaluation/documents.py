"""Turn a stored document into text for the evaluators, within fixed bounds.

An upload is untrusted: reading stops after `MAX_PAGES` PDF pages and `MAX_TEXT_CHARS`
characters, and any parser failure becomes `UnreadableDocument`, which the handler turns
into a `document_unreadable` risk flag instead of a crashed attempt.
"""

from __future__ import annotations

import codecs
import io
import itertools
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from pypdf import PdfReader

MAX_PAGES: Final = 50
MAX_TEXT_CHARS: Final = 200_000
IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/webp"})
# Tried in order after a BOM or declared charset; latin-1 comes last as it decodes anything.
TEXT_ENCODINGS: Final = ("utf-8-sig", "cp1252")
UTF_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# pypdf logs every repair it makes to a damaged file at WARNING or ERROR under "pypdf.*".
PYPDF_LOGGER: Final = "pypdf"
# Serialises the quieting of pypdf (see `_quiet_pypdf`); a lock, not state.
_QUIET_LOCK: Final = threading.Lock()


class UnreadableDocument(Exception):
    """A document whose content cannot be read: empty, damaged or of an unknown type."""


def extract_text(mime_type: str, data: bytes) -> str | None:
    """The document's text, or None for an image, which the rules evaluator counts unread."""
    media_type, charset = _parse_mime_type(mime_type)
    if not data:
        raise UnreadableDocument("empty document")
    if media_type in IMAGE_TYPES:
        return None
    if media_type == "text/plain":
        return _clean(_decode(data, charset))
    if media_type == "application/pdf":
        return _clean(_pdf_text(data))
    raise UnreadableDocument(f"unsupported document type {media_type[:60]!r}")


def _parse_mime_type(mime_type: str) -> tuple[str, str | None]:
    """`text/plain; charset=latin-1` -> ("text/plain", "latin-1"); case and spaces ignored."""
    media_type, *params = mime_type.split(";")
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return media_type.strip().lower(), charset


def _decode(data: bytes, charset: str | None) -> str:
    """Decode plain text by BOM, declared charset, UTF-8 then cp1252; never fails."""
    bom = [codec for mark, codec in UTF_BOMS if data.startswith(mark)][:1]
    declared = [charset] if charset else []
    for encoding in (*bom, *declared, *TEXT_ENCODINGS):
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _clean(text: str) -> str:
    """Bound the text and drop NUL characters, which no text store or prompt wants."""
    return text.replace("\x00", "")[:MAX_TEXT_CHARS]


def _pdf_text(data: bytes) -> str:
    """Text of the first `MAX_PAGES` pages; any parser failure means the PDF is unreadable."""
    with _quiet_pypdf():
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise UnreadableDocument("encrypted PDF")
            if len(reader.pages) == 0:
                raise UnreadableDocument("PDF without pages")
            return _pages_text(reader)
        except UnreadableDocument:
            raise
        except Exception as exc:  # a hostile file can break the parser in any way
            raise UnreadableDocument(f"damaged PDF ({type(exc).__name__})") from exc


def _pages_text(reader: PdfReader) -> str:
    """Join page texts, stopping once `MAX_TEXT_CHARS` are in hand."""
    parts: list[str] = []
    size = 0
    for page in itertools.islice(reader.pages, MAX_PAGES):
        text = page.extract_text()
        parts.append(text)
        size += len(text)
        if size >= MAX_TEXT_CHARS:
            break
    return "\n".join(parts)


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's warnings and repair logs while it reads one document.

    Warning filters and logger levels are process-wide, and the handler reads documents in
    worker threads: two overlapping save/restore pairs could leave pypdf silenced for good.
    The lock makes each save/restore pair whole; pypdf holds the GIL anyway, so little
    parallelism is lost.
    """
    logger = logging.getLogger(PYPDF_LOGGER)
    with _QUIET_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            logger.setLevel(level)
