"""Record framing for the log files: a header per file, a checksummed frame per record.

file header (8 bytes):  b"JTRL" | format u16 (=1) | kind u16 (0 feed, 1 stream)

record (little-endian, 24-byte header then payload):
  0  u16 magic 0x4A54      resync aid and quick sanity check
  2  u8  format (=1)
  3  u8  flags (0)
  4  u32 length            payload bytes, at most MAX_PAYLOAD
  8  u64 seq               first version (stream file) or first position (feed) in it
 16  u32 count             events in the record, so the next seq is seq + count
 20  u32 crc               zlib CRC-32 of bytes 2..20 and the payload
 24  payload               msgpack array of envelopes

A record is valid only if its magic, format, length, checksum and seq (the previous
record's seq + count) all agree; a reader exposes the valid prefix and nothing after.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

FILE_MAGIC: Final = b"JTRL"
FORMAT: Final = 1
KIND_FEED: Final = 0
KIND_STREAM: Final = 1
FILE_HEADER = struct.Struct("<4sHH")
HEADER = struct.Struct("<HBBIQII")
MAGIC: Final = 0x4A54
MAX_PAYLOAD: Final = 64 * 1024 * 1024


def file_header(kind: int) -> bytes:
    return FILE_HEADER.pack(FILE_MAGIC, FORMAT, kind)


def check_file_header(data: bytes | memoryview, kind: int) -> bool:
    """True if `data` starts with a complete, matching file header."""
    if len(data) < FILE_HEADER.size:
        return False
    magic, fmt, k = FILE_HEADER.unpack_from(data, 0)
    return bool(magic == FILE_MAGIC and fmt == FORMAT and k == kind)


def frame(seq: int, count: int, payload: bytes) -> bytes:
    """One record: header with checksum, then the payload."""
    head = HEADER.pack(MAGIC, FORMAT, 0, len(payload), seq, count, 0)
    crc = zlib.crc32(payload, zlib.crc32(memoryview(head)[2:20]))
    return head[:20] + crc.to_bytes(4, "little") + payload


@dataclass(slots=True)
class Frame:
    offset: int
    seq: int
    count: int
    payload: memoryview


def valid_at(buf: memoryview, off: int, seq: int | None) -> tuple[int, int, int] | None:
    """(length, seq, count) of a valid record at `off`, or None; `seq` None accepts any."""
    if len(buf) - off < HEADER.size:
        return None
    magic, fmt, _flags, length, rseq, count, crc = HEADER.unpack_from(buf, off)
    if magic != MAGIC or fmt != FORMAT or length > MAX_PAYLOAD:
        return None
    end = off + HEADER.size + length
    if end > len(buf):
        return None
    if seq is not None and rseq != seq:
        return None
    if zlib.crc32(buf[off + HEADER.size : end], zlib.crc32(buf[off + 2 : off + 20])) != crc:
        return None
    return length, rseq, count


def damaged(rest: memoryview) -> bool:
    """Whether the bytes after a valid prefix hold damage rather than a torn tail.

    A torn tail is a record cut short by a crash: its header claims more bytes than the
    file has. Only a valid record found after the bad one means damage; the search skips
    the bad record's own payload, which may embed anything a client sent.
    """
    if valid_at(rest, 0, None) is not None:
        return True  # a whole valid record in the wrong place: a gap or a duplicate
    size = plausible_size(rest, 0)
    if size is not None and size > len(rest):
        return False
    return find_valid_after(rest, size if size is not None else 1) is not None


def plausible_size(buf: memoryview, off: int) -> int | None:
    """The full size of the record whose header starts at `off`, if the header is plausible."""
    if len(buf) - off < HEADER.size:
        return HEADER.size
    magic, fmt, _flags, length, _seq, _count, _crc = HEADER.unpack_from(buf, off)
    if magic != MAGIC or fmt != FORMAT or length > MAX_PAYLOAD:
        return None
    return HEADER.size + int(length)


def find_valid_after(buf: memoryview, start: int) -> int | None:
    """Offset of the first valid record (any seq) after `start`, or None."""
    needle = MAGIC.to_bytes(2, "little")
    raw = bytes(buf)  # only on the slow path: bytes after the valid prefix
    pos = raw.find(needle, start)
    while pos != -1:
        if valid_at(buf, pos, None) is not None:
            return pos
        pos = raw.find(needle, pos + 1)
    return None
