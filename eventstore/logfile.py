"""Reading one framed log file without a lock: the valid prefix, chunk by chunk.

Bytes after the valid prefix are "not yet visible" to a reader: an append in flight,
a torn tail a writer will set aside, or damage that `verify` reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from eventstore import framing

CHUNK = 1 << 20


@dataclass(slots=True)
class Tail:
    """Where the valid prefix of a file ended, and what lies after it."""

    end: int
    next_seq: int
    size: int
    damaged: bool = False

    @property
    def trailing(self) -> int:
        return self.size - self.end


def read_frames(
    fd: int, start: int, next_seq: int, tail: Tail, *, look_past: bool = False
) -> Iterator[framing.Frame]:
    """Yield the valid frames from `start`; fill `tail` with where they end.

    `look_past` checks whether the bytes after the prefix hold a valid record (damage).
    """
    size = os.fstat(fd).st_size
    off = start
    want = CHUNK
    while True:
        buf = memoryview(os.pread(fd, max(want, CHUNK), off)) if off < size else memoryview(b"")
        scan = framing.scan(buf, 0, next_seq, look_past=False)
        for f in scan.frames:
            f.offset += off
            yield f
        next_seq = scan.next_seq
        consumed = scan.end
        off += consumed
        if off >= size or len(buf) == 0:
            break
        if not scan.trailing:
            want = CHUNK  # the chunk ended on a record boundary: read on
            continue
        # A record straddles the chunk end, or the valid prefix ends here.
        need = framing.plausible_size(buf, scan.end)
        if need is None or off + need > size or need <= len(buf) - scan.end:
            break
        want = need
    tail.end, tail.next_seq, tail.size = off, next_seq, size
    if look_past and off < size:
        tail.damaged = framing.damaged(memoryview(os.pread(fd, size - off, off)))
