"""The records of a framed log, checked in one tight loop: `verify`'s walk of every frame.

`logfile.read_frames` builds a `Frame` and calls two checkers per record, which was over
half of the store check's time. Here the same checks (magic, format, length, seq chain,
CRC; framing.py) run over a buffer in one loop that keeps only the payloads. A walk stops
at the first record that is not valid, exactly where `read_frames` stops, and the caller
tells a torn tail from damage the same way (`framing.damaged`).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from typing import Final

from eventstore import framing
from eventstore.logfile import Tail

CHUNK: Final = 8 << 20
"""Bytes read at a time from a large log (a feed segment is 64 MiB)."""

_Buffer = bytes | bytearray
_SIZE: Final = framing.HEADER.size
_WORDS: Final = struct.Struct("<IIQII")
"""`framing.HEADER` with magic, format and flags read as one word (flags not checked)."""
_KIND: Final = framing.MAGIC | framing.FORMAT << 16
assert _WORDS.size == _SIZE


def chain(data: _Buffer, off: int, end: int, seq: int) -> tuple[list[_Buffer], int, int]:
    """The payloads of the valid records chained from `seq` at `off`, before `end`.

    Returns them with the offset and the seq where the chain stopped: at `end`, at a
    record that runs past `end`, or at one that is not valid. Payloads are copies (slices
    of bytes are quicker to make than memoryviews, and as quick to decode).
    """
    header = _WORDS.unpack_from
    crc32 = zlib.crc32
    most = framing.MAX_PAYLOAD
    payloads: list[_Buffer] = []
    add = payloads.append
    while end - off >= _SIZE:
        kind, length, first, count, crc = header(data, off)
        body = off + _SIZE
        stop = body + length
        if (
            kind & 0xFFFFFF != _KIND
            or length > most
            or stop > end
            or first != seq
            or crc32(payload := data[body:stop], crc32(data[off + 2 : off + 20])) != crc
        ):
            break
        add(payload)
        off, seq = stop, seq + count
    return payloads, off, seq


def walk(
    fd: int,
    start: int,
    next_seq: int,
    tail: Tail,
    on_payloads: Callable[[list[_Buffer]], object],
    *,
    look_past: bool = False,
    chunk: int = CHUNK,
) -> None:
    """`read_frames` over a whole file, a chunk at a time: hand on the valid payloads of
    each chunk in order, and fill `tail` as `read_frames` does."""
    size = os.fstat(fd).st_size
    off = start
    while off < size:
        buf = os.pread(fd, chunk, off)
        if not buf:
            break  # the file is shorter than it was: as `read_frames`, stop
        payloads, rel, next_seq = chain(buf, 0, len(buf), next_seq)
        if payloads:
            on_payloads(payloads)
        off += rel
        if rel < len(buf):  # stopped inside the chunk: an invalid record or a long one
            need = framing.plausible_size(memoryview(buf), rel)
            if need is None or rel + need <= len(buf) or off + need > size:
                break  # not valid; or whole in the chunk and not valid; or past the end
            if need > chunk:  # longer than a chunk: read it on its own
                buf = os.pread(fd, need, off)
                payloads, rel, next_seq = chain(buf, 0, len(buf), next_seq)
                if not payloads:
                    break
                on_payloads(payloads)
                off += rel
    tail.end, tail.next_seq, tail.size = off, next_seq, size
    if look_past and off < size:
        tail.damaged = framing.damaged(memoryview(os.pread(fd, size - off, off)))
