"""Lead documents as content-addressed blobs: `blobs/<aa>/<sha256>` under the data directory.

A document is streamed to a temporary file while it is hashed, refused as soon as it passes
the size limit (never buffered whole), fsynced, then renamed to its hash and the directory
fsynced, all before the `DocumentAdded` event that names it is appended: an event never
points at a blob that is not durable. Equal contents share one file, so a blob is never
rewritten or deleted by a request (a removed document may still be in a job's history).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import anyio
import msgspec

from eventstore import EventStore
from eventstore.filestore import FileStore
from eventstore.layout import fsync_dir
from service.errors import PayloadTooLarge, StorageUnavailable, ValidationFailed
from service.settings import Settings

WRITE_BATCH: Final = 1024 * 1024  # bytes gathered before one write in a thread
STALE_TEMP_SECONDS: Final = 24 * 3600
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
EMPTY: Final = "body: the document is empty"


class Blob(msgspec.Struct, frozen=True):
    """A stored blob: its content hash and size in bytes."""

    sha256: str
    size: int


def blob_root(store: EventStore, settings: Settings) -> Path:
    """Where a store's blobs live: beside a FileStore's logs, else in the data directory."""
    if isinstance(store, FileStore):
        return store.log.layout.root / "blobs"
    return settings.data / "blobs"


class BlobStore:
    """Content-addressed files under `root`; open with `BlobStore.open`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    @classmethod
    async def open(cls, root: Path) -> BlobStore:
        """Create the directories if needed and clear temporary files left by a crash."""
        blobs = cls(root)
        await anyio.to_thread.run_sync(blobs._prepare)
        return blobs

    def _prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Only old ones: another process on this directory may be writing a fresh one.
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in self.tmp.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    def path(self, sha256: str) -> Path:
        """The file of a blob; ValueError unless `sha256` is 64 lowercase hex digits."""
        if _SHA256.fullmatch(sha256) is None:
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    async def read(self, sha256: str) -> bytes:
        """A blob's bytes (FileNotFoundError if it is missing): for the evaluation worker."""
        return await anyio.Path(self.path(sha256)).read_bytes()

    async def write(self, chunks: AsyncIterator[bytes], limit: int) -> Blob:
        """Store a stream of bytes; PayloadTooLarge as soon as it passes `limit`, 422 if empty.

        Nothing stays behind when it raises: the temporary file is removed.
        """
        temp = self.tmp / f"{secrets.token_hex(16)}.part"
        digest = hashlib.sha256()
        size = 0
        fd = -1
        try:
            fd = await anyio.to_thread.run_sync(_create, temp)
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The document is larger than {limit} bytes.")
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BATCH:
                    await anyio.to_thread.run_sync(_write, fd, digest, pending)
                    pending, pending_size = [], 0
            await anyio.to_thread.run_sync(_write, fd, digest, pending)
            if size == 0:
                raise ValidationFailed(EMPTY)
            sha = digest.hexdigest()
            fd, owned = -1, fd  # `_commit` closes it, and removes the file if it fails
            await anyio.to_thread.run_sync(_commit, owned, temp, self.path(sha))
        except OSError as exc:
            raise StorageUnavailable(f"The document could not be stored: {exc.strerror}") from exc
        finally:
            if fd != -1:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_discard, fd, temp)
        return Blob(sha256=sha, size=size)


def _create(temp: Path) -> int:
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def _write(fd: int, digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _commit(fd: int, temp: Path, final: Path) -> None:
    """fsync, then rename into place and fsync the directory; an equal blob is kept as is."""
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if final.exists():
            temp.unlink()
            return
        new_dir = not final.parent.exists()
        final.parent.mkdir(exist_ok=True)
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    if new_dir:
        fsync_dir(final.parent.parent)


def _discard(fd: int, temp: Path) -> None:
    os.close(fd)
    temp.unlink(missing_ok=True)
