"""The checkpoint file: a header, then each projection's dumped state, replaced atomically.

Layout: `JTCK`, the header's length (4 bytes, big-endian), the msgpack header, then the
states back to back in the header's order. States are written and read in place, never
joined into one more buffer: a job table's dump is tens of MB. The header's CRC-32 over the
states catches damage that would still decode.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

MAGIC: Final = b"JTCK"
FORMAT: Final = 1
"""Bump when a projection's state changes shape: older checkpoints are then rebuilt."""

_LENGTH: Final = struct.Struct(">I")
_START: Final = len(MAGIC) + _LENGTH.size


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The header: the last position applied, its event's id, and the states' sizes."""

    format: int
    position: int
    event_id: str
    sizes: dict[str, int]
    crc32: int


class CheckpointUnreadable(ValueError):
    """A file that is not a whole checkpoint: damaged, truncated or something else."""


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Checkpoint)


def _crc(states: Sequence[bytes]) -> int:
    crc = 0
    for state in states:
        crc = zlib.crc32(state, crc)
    return crc


def pack_checkpoint(
    position: int, event_id: str, states: Mapping[str, bytes], fmt: int = FORMAT
) -> list[bytes]:
    """The file's content as chunks, to be written one after the other."""
    header = _ENCODER.encode(
        Checkpoint(
            format=fmt,
            position=position,
            event_id=event_id,
            sizes={name: len(state) for name, state in states.items()},
            crc32=_crc(list(states.values())),
        )
    )
    return [MAGIC + _LENGTH.pack(len(header)), header, *states.values()]


def unpack_checkpoint(data: bytes) -> tuple[Checkpoint, dict[str, bytes]]:
    """The header and each state; CheckpointUnreadable unless `data` is one whole checkpoint."""
    return _read(io.BytesIO(data))


def read_checkpoint(path: Path) -> tuple[Checkpoint, dict[str, bytes]] | None:
    """Blocking: the checkpoint at `path`, None if there is none.

    Reads each state on its own, so the caller can load and drop them one at a time.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        return _read(f)


def _read(f: BinaryIO) -> tuple[Checkpoint, dict[str, bytes]]:
    start = f.read(_START)
    if len(start) < _START or start[: len(MAGIC)] != MAGIC:
        raise CheckpointUnreadable("not a checkpoint file")
    (length,) = _LENGTH.unpack_from(start, len(MAGIC))
    try:
        header = _DECODER.decode(f.read(length))
    except msgspec.DecodeError as exc:
        raise CheckpointUnreadable(f"unreadable header: {exc}") from exc
    states: dict[str, bytes] = {}
    for name, size in header.sizes.items():
        state = f.read(size) if size >= 0 else b""
        if len(state) != size:
            raise CheckpointUnreadable("truncated")
        states[name] = state
    if f.read(1):
        raise CheckpointUnreadable("trailing bytes after the states")
    if _crc(list(states.values())) != header.crc32:
        raise CheckpointUnreadable("checksum mismatch")
    return header, states


def write_atomically(path: Path, chunks: Sequence[bytes]) -> None:
    """Blocking: replace `path` with the chunks, so a crash leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_checkpoint(path: Path, position: int, event_id: str, states: Mapping[str, bytes]) -> None:
    """Blocking: pack (with its checksum) and write a checkpoint atomically."""
    write_atomically(path, pack_checkpoint(position, event_id, states))
