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
    """Yield the valid frames from `start`, each as soon as it is checked; fill `tail`.

    Reads in chunks of at least CHUNK bytes (more for a larger record). `look_past`
    checks whether the bytes after the valid prefix hold damage rather than a torn tail.
    """
    size = os.fstat(fd).st_size
    off = start
    base = start  # file offset of buf[0]
    buf = memoryview(b"")
    while off < size:
        rel = off - base
        need = framing.plausible_size(buf, rel)
        if need is None:
            break
        for _ in range(2):  # read for the header, then for a record longer than a chunk
            if rel + need <= len(buf):
                break
            if off + need > size:
                break  # a record that runs past the end: in flight, or torn
            buf = memoryview(os.pread(fd, max(need, CHUNK), off))
            base, rel = off, 0
            need = framing.plausible_size(buf, 0)
            if need is None:
                break
        if need is None or rel + need > len(buf):
            break
        found = framing.valid_at(buf, rel, next_seq)
        if found is None:
            break
        length, seq, count = found
        body = rel + framing.HEADER.size
        yield framing.Frame(off, seq, count, buf[body : body + length])
        off += framing.HEADER.size + length
        next_seq = seq + count
    tail.end, tail.next_seq, tail.size = off, next_seq, size
    if look_past and off < size:
        tail.damaged = framing.damaged(memoryview(os.pread(fd, size - off, off)))
