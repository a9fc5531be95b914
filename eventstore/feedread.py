"""Reading the feed across its segments without a lock, as of the mark read first.

The feed is a chain of segment files (`Layout.segment`): each holds the records from its
first position up to the next segment's first. Only the newest (the mark's) is appended
to; a sealed one may be rewritten by a prune, which replaces it with a file of the same
records minus the removed events (`retention.py`). So a reader opens a segment for the
length of one read and never caches a descriptor: one that still holds the old file
reads the old, equally consistent records, and the old file's space is freed as soon as
that read ends. Offsets learnt in a file are keyed by its inode and the mark's count of
rewrites (`compactions`), so a rewrite (a new inode; and one that reuses the inode of a
file an earlier rewrite freed is a later count) never sends a reader to a stale offset.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterator
from typing import Final

from eventstore import framing
from eventstore.errors import CorruptionError
from eventstore.layout import Layout, Mark
from eventstore.logfile import Tail, read_frames

FEED_START: Final = framing.FILE_HEADER.size
INDEX_EVERY: Final = 256  # positions between entries of the in-memory index of a file

_File = tuple[int, int]  # (inode, the mark's compactions when the read began)
_Key = tuple[int, _File]  # (segment's first position, file)


class FeedReader:
    """Frames of the feed from any position, across segments; safe from many threads."""

    def __init__(self, layout: Layout, current_mark: Callable[[], Mark | None]) -> None:
        self._layout = layout
        self._current_mark = current_mark
        self._lock = threading.Lock()
        self._firsts: list[int] = [1]
        self._listed: tuple[int, int] | None = None  # (segment, compactions) of `_firsts`
        self._index: dict[_Key, tuple[list[int], list[int]]] = {}
        # The end of the furthest record read: (next position, segment, file, offset).
        self.hint: tuple[int, int, _File, int] = (1, 1, (-1, -1), FEED_START)

    def segments(self, mark: Mark | None) -> list[int]:
        """The segments up to the mark's, listed again only when the mark says they changed."""
        key = (mark.segment, mark.compactions) if mark is not None else None
        with self._lock:
            if key is not None and key == self._listed:
                return self._firsts
        firsts = self._layout.segments(mark.segment if mark is not None else None) or [1]
        with self._lock:
            if key is None or self._listed is None or key[1] != self._listed[1]:
                active = firsts[-1]  # rewritten files have new inodes: drop the rest
                self._index = {k: v for k, v in self._index.items() if k[0] == active}
            self._firsts, self._listed = firsts, key
        return firsts

    def frames(self, position: int) -> Iterator[framing.Frame]:
        """Frames from the one holding `position` (or an earlier one) to the valid end.

        Raises CorruptionError when the valid prefix ends before the mark, or a sealed
        segment does not end exactly where the next one begins: those bytes were complete
        before this read began, so they are damage, not an append in flight.
        """
        position = max(position, 1)
        mark = self._current_mark()
        firsts = self.segments(mark)
        generation = mark.compactions if mark is not None else -1
        start = max(bisect.bisect_right(firsts, position) - 1, 0)
        for k in range(start, len(firsts)):
            first = firsts[k]
            path = self._layout.segment(first)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise CorruptionError(f"feed segment {path} is missing") from exc
            try:
                ino = (os.fstat(fd).st_ino, generation)
                seq, off = self._start(first, ino, position) if k == start else (first, FEED_START)
                if off == FEED_START and not framing.check_file_header(
                    os.pread(fd, FEED_START, 0), framing.KIND_FEED
                ):
                    if k == len(firsts) - 1 and mark is None:
                        return  # a feed being created: nothing to read yet
                    raise CorruptionError(f"{path} has no valid header")
                tail = Tail(off, seq, 0)
                for f in read_frames(fd, off, seq, tail):
                    self._note(first, ino, f)
                    yield f
            finally:
                os.close(fd)
            if k < len(firsts) - 1:
                if tail.next_seq != firsts[k + 1] or tail.trailing:
                    raise CorruptionError(f"{path}: damaged record at offset {tail.end}")
            elif mark is not None and mark.segment == first and tail.end < mark.end:
                now = self._current_mark()
                if now is not None and (now.segment, now.compactions) != (
                    mark.segment,
                    mark.compactions,
                ):
                    return  # sealed and rewritten by a prune since the mark was read
                raise CorruptionError(f"{path}: damaged record at offset {tail.end}")

    def _start(self, first: int, ino: _File, position: int) -> tuple[int, int]:
        """The latest known record boundary at or before `position` in this file."""
        with self._lock:
            seq, segment, inode, off = self.hint
            if segment == first and inode == ino and position >= seq:
                return seq, off
            found = self._index.get((first, ino))
            if found is not None:
                i = bisect.bisect_right(found[0], position) - 1
                if i >= 0:
                    return found[0][i], found[1][i]
        return first, FEED_START

    def _note(self, first: int, ino: _File, f: framing.Frame) -> None:
        after = f.seq + f.count
        if after > self.hint[0]:  # a benign race: any record boundary is a valid hint
            self.hint = (after, first, ino, f.offset + framing.HEADER.size + len(f.payload))
        found = self._index.get((first, ino))
        if found is None or f.seq >= found[0][-1] + INDEX_EVERY:
            with self._lock:
                found = self._index.setdefault((first, ino), ([first], [FEED_START]))
                if f.seq >= found[0][-1] + INDEX_EVERY:
                    found[0].append(f.seq)
                    found[1].append(f.offset)
