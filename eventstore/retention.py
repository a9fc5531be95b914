"""Retention in the store: which streams a tombstone removes, and rewriting a sealed segment.

A prune is an append whose tombstones (`JobPruned`, in `pruned:<site>`) name the streams
they remove; every removed stream is in the same append with its exact version, so one
that moved on since the caller decided is a conflict and nothing is removed. After it the
removed streams read as empty, and their events leave the feed: a sealed segment is
rewritten with the same records, the removed events taken out, and records left with no
event merged into one empty record per run. A record keeps its first position and count,
so the chain of positions stays valid and the taken positions are holes that readers
skip. Positions are never reused.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from eventstore import framing, streams
from eventstore.errors import CorruptionError, JobtrailError
from eventstore.events import Event, JobPruned
from eventstore.layout import Layout, fsync_dir, write_atomic
from eventstore.logfile import Tail, read_frames
from eventstore.records import AppendTo, pack

FEED_START: Final = framing.FILE_HEADER.size
_FLUSH: Final = 1 << 20


class InvalidPrune(JobtrailError):
    """A prune whose tombstones and version checks do not match."""

    code = "ValidationError"
    status = 422


def removed_stream(event: Event) -> str | None:
    """The stream a tombstone removes; None for any other event."""
    return streams.job(event.job_id) if isinstance(event, JobPruned) else None


def removed_streams(batch: Sequence[AppendTo]) -> list[str]:
    """The streams a prune removes, each checked to be in the batch at an exact version."""
    removed = [s for item in batch for e in item.events if (s := removed_stream(e.event))]
    if not removed:
        raise InvalidPrune("a prune needs at least one tombstone")
    checks = {item.stream: item for item in batch}
    for stream in removed:
        item = checks.get(stream)
        if item is None or item.events or item.expected_version < 1:
            raise InvalidPrune(
                f"{stream} must be in the prune with no events and the version it was read at"
            )
    if len(set(removed)) != len(removed):
        raise InvalidPrune("a stream is removed twice in one prune")
    return removed


def refuse_tombstones(batch: Sequence[AppendTo]) -> None:
    """A tombstone outside `prune` would hide a job whose log stays: refused."""
    for item in batch:
        for e in item.events:
            if isinstance(e.event, JobPruned):
                raise InvalidPrune("a job_pruned event is appended only by prune")


def tombstones_only(batch: Sequence[AppendTo]) -> None:
    """A prune appends its tombstones and nothing else."""
    for item in batch:
        for e in item.events:
            if not isinstance(e.event, JobPruned):
                raise InvalidPrune("a prune appends tombstones only")


class Todo(msgspec.Struct, frozen=True):
    """Segments a prune still has to rewrite, and the streams whose events leave them."""

    segments: list[int]
    streams: list[str]


def write_todo(path: Path, todo: Todo) -> None:
    write_atomic(path, msgspec.json.encode(todo) + b"\n")


def add_todo(path: Path, todo: Todo) -> None:
    """Add one prune's segments and streams to the todo: one line appended, then synced.

    Several prunes (a backlog, in batches) share one todo, so each segment is rewritten
    once at the end instead of once per batch; appending keeps each batch's cost flat.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        created = size == 0
        line = msgspec.json.encode(todo) + b"\n"
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # after a torn line: keep this one whole on its own line
        _write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read_todo(path: Path) -> Todo | None:
    """The union of the todo's lines; a torn last line (a crash mid-append) is left out.

    A line whose prune never landed names streams that still exist: it removes nothing.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    segments: set[int] = set()
    names: set[str] = set()
    found = False
    for line in data.splitlines():
        try:
            todo = msgspec.json.decode(line, type=Todo)
        except msgspec.DecodeError:
            continue  # torn by a crash: that prune's record had not landed yet
        found = True
        segments.update(todo.segments)
        names.update(todo.streams)
    return Todo(sorted(segments), sorted(names)) if found else None


class _Head(msgspec.Struct, array_like=True):
    """The first fields of a stored envelope: enough to decide whether it stays."""

    position: int
    stream: str


_RAWS: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_HEAD: Final = msgspec.msgpack.Decoder(_Head)


def rewrite_segment(
    layout: Layout, first: int, next_first: int, drop: Callable[[str], bool]
) -> int:
    """Replace the sealed segment `first` by one without the events of streams `drop` names.

    Crash-safe: a new file is written and synced beside it, then renamed over it and the
    directory synced, so a crash leaves the old or the new segment. Refuses (CorruptionError)
    a segment whose records do not run whole from `first` to `next_first`. Returns the bytes
    saved (0: nothing to take out, the file is left alone).
    """
    path = layout.segment(first)
    tmp = path.with_name(path.name + ".tmp")
    src = os.open(path, os.O_RDONLY)
    out = -1
    ready = False
    try:
        size = os.fstat(src).st_size
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        buf = bytearray(framing.file_header(framing.KIND_FEED))
        written = 0
        hole: list[int] | None = None  # [first position, count] of empty records in a row
        changed = False
        tail = Tail(FEED_START, first, 0)
        for f in read_frames(src, FEED_START, first, tail):
            raws = _RAWS.decode(f.payload)
            keep = [r for r in raws if not drop(_HEAD.decode(r).stream)]
            if keep:
                if hole is not None:
                    buf += framing.frame(hole[0], hole[1], pack([]))
                    hole = None
                if len(keep) == len(raws):
                    buf += framing.frame(f.seq, f.count, bytes(f.payload))
                else:
                    buf += framing.frame(f.seq, f.count, pack([bytes(r) for r in keep]))
                    changed = True
            else:
                changed = changed or bool(raws) or hole is not None
                hole = [f.seq, f.count] if hole is None else [hole[0], hole[1] + f.count]
            if len(buf) >= _FLUSH:
                written += _write_all(out, buf)
                buf.clear()
        if hole is not None:
            buf += framing.frame(hole[0], hole[1], pack([]))
        if tail.trailing or tail.next_seq != next_first:
            raise CorruptionError(f"{path}: not whole from {first} to {next_first}; left as is")
        if not changed:
            return 0
        written += _write_all(out, buf)
        os.fsync(out)
        ready = True
    finally:
        os.close(src)
        if out >= 0:
            os.close(out)
        if not ready:
            tmp.unlink(missing_ok=True)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return size - written


def remove_leftovers(feed_dir: Path) -> None:
    """Delete rewrites a crashed prune left half done (never renamed over a segment)."""
    for name in os.listdir(feed_dir):
        if name.endswith(".log.tmp"):
            (feed_dir / name).unlink(missing_ok=True)


def _write_all(fd: int, data: bytes | bytearray) -> int:
    view = memoryview(data)
    total = len(view)
    while view:
        view = view[os.write(fd, view) :]
    return total


def segments_of(positions: Iterable[int], firsts: Sequence[int]) -> list[int]:
    """The segments (by first position) that hold these positions."""
    return sorted({firsts[max(bisect.bisect_right(firsts, p) - 1, 0)] for p in positions})
