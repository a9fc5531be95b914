"""Document text: real PDFs built here, odd encodings, and damaged or hostile uploads."""

from __future__ import annotations

import io
import logging

import pytest
from pypdf import PdfReader, PdfWriter

from worker.evaluation.documents import (
    MAX_PAGES,
    MAX_TEXT_CHARS,
    UnreadableDocument,
    extract_text,
)


def pdf(*pages: list[str]) -> bytes:
    """A minimal valid PDF, one Helvetica line per string, with an exact xref table."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
    ]
    for i, lines in enumerate(pages):
        shown = " ".join(f"({_escape(line)}) Tj T*" for line in lines)
        content = f"BT /F1 12 Tf 14 TL 72 712 Td {shown} ET".encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
            b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> "
            + f"/Contents {4 + 2 * i} 0 R >>".encode()
        )
        objects.append(
            f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def encrypted(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


PAY_STUB = pdf(["Employee: Maria Lopez", "Gross pay: $3,000.00 (net $2,310.00)"])


def test_a_pdf_gives_the_text_of_its_pages() -> None:
    text = extract_text("application/pdf", PAY_STUB)
    assert text is not None
    assert text.splitlines() == ["Employee: Maria Lopez", "Gross pay: $3,000.00 (net $2,310.00)"]


def test_every_page_is_read_in_order() -> None:
    text = extract_text("application/pdf", pdf(["page one"], ["page two"], ["page three"]))
    assert text is not None
    assert [line for line in text.splitlines() if line] == ["page one", "page two", "page three"]


def test_only_the_first_pages_are_read() -> None:
    pages = [[f"page {i}"] for i in range(MAX_PAGES + 5)]
    text = extract_text("application/pdf", pdf(*pages))
    assert text is not None
    assert f"page {MAX_PAGES - 1}" in text and f"page {MAX_PAGES}" not in text


def test_a_pdf_pypdf_must_repair_is_read_quietly(caplog: pytest.LogCaptureFixture) -> None:
    moved = PAY_STUB.replace(b"0000000009 00000 n", b"0000000019 00000 n")  # object 1's offset
    assert moved != PAY_STUB
    logger = logging.getLogger("pypdf")
    level = logger.level
    with caplog.at_level(logging.DEBUG):
        text = extract_text("application/pdf", moved)
    assert text is not None and "Maria Lopez" in text
    assert [r for r in caplog.records if r.name.startswith("pypdf")] == []
    assert logger.level == level


@pytest.mark.parametrize(
    "data",
    [
        PAY_STUB[: len(PAY_STUB) // 2],
        PAY_STUB[:40],
        b"%PDF-1.4\nnot a pdf at all",
        b"\x89PNG\r\n\x1a\n not a pdf",
        PAY_STUB.replace(b"/Count 1", b"/Count 0").replace(b"/Kids [3 0 R]", b"/Kids []"),
    ],
    ids=["half", "header", "garbage", "png", "no_pages"],
)
def test_a_damaged_pdf_is_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableDocument):
        extract_text("application/pdf", data)


def test_a_pdf_locked_with_a_password_is_unreadable() -> None:
    with pytest.raises(UnreadableDocument, match="encrypted"):
        extract_text("application/pdf", encrypted(PAY_STUB, "secret"))
    opened = extract_text("application/pdf", encrypted(PAY_STUB, ""))
    assert opened is not None and "Maria Lopez" in opened


@pytest.mark.parametrize(
    "mime_type", ["application/pdf", "text/plain", "image/png", "image/jpeg", "image/webp"]
)
def test_empty_data_is_unreadable(mime_type: str) -> None:
    with pytest.raises(UnreadableDocument, match="empty"):
        extract_text(mime_type, b"")


@pytest.mark.parametrize("mime_type", ["application/msword", "text/html", ""])
def test_an_unknown_type_is_unreadable(mime_type: str) -> None:
    with pytest.raises(UnreadableDocument, match="unsupported"):
        extract_text(mime_type, b"hello")


@pytest.mark.parametrize("mime_type", ["image/jpeg", "image/png", "image/webp", "Image/PNG"])
def test_images_are_counted_unread(mime_type: str) -> None:
    assert extract_text(mime_type, b"\xff\xd8\xff\xe0 jpeg bytes") is None


@pytest.mark.parametrize(
    ("mime_type", "data", "text"),
    [
        ("text/plain", "Salary: 6 000 € – José".encode(), "Salary: 6 000 € – José"),
        ("text/plain", "\ufeffName: José".encode(), "Name: José"),
        ("text/plain", "Name: José – café".encode("cp1252"), "Name: José – café"),
        ("text/plain", b"Name: Jos\xe9 \x81\x8d", "Name: Jos\xe9 \x81\x8d"),  # not cp1252: latin-1
        ("text/plain", "Name: Zoë".encode("utf-16"), "Name: Zoë"),
        ("text/plain; charset=koi8-r", "Имя: Мария".encode("koi8-r"), "Имя: Мария"),
        ("text/plain; charset=no-such-codec", b"Name: Maria", "Name: Maria"),
        ("TEXT/PLAIN", b"Name:\x00 Maria", "Name: Maria"),
    ],
    ids=["utf8", "utf8_bom", "cp1252", "latin1", "utf16_bom", "charset", "bad_charset", "nul"],
)
def test_plain_text_in_any_encoding(mime_type: str, data: bytes, text: str) -> None:
    assert extract_text(mime_type, data) == text


def test_plain_text_is_capped() -> None:
    text = extract_text("text/plain", b"a" * (MAX_TEXT_CHARS + 10))
    assert text is not None and len(text) == MAX_TEXT_CHARS
