"""The file store's synchronous core: one commit log, one log per stream, group commit.

How an append lands (DESIGN.md invariants 1-4; docs/storage.md tells the whole story):
1. Appenders queue their request; one thread at a time leads a batch of them.
2. The leader takes `flock` on the feed (serializing every process on this directory),
   reads `feed.mark`, and if the feed is longer than the mark says, a previous holder
   died mid-commit: its complete records are applied and its torn tail set aside.
3. Each request is decided against the streams' current versions (planning.py).
4. The batch's records go to the feed in one write, then one fdatasync: that is the
   commit point, so the events of one append land all together or not at all.
5. The same events are appended to each stream's own log, and the mark moves on.
A failed fdatasync stops the process (the kernel may have dropped the pages).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from eventstore import framing, planning, retention
from eventstore.clock import utcnow
from eventstore.errors import (
    CorruptionError,
    JobtrailError,
    StorageError,
    StoreClosed,
)
from eventstore.feedread import FeedReader
from eventstore.layout import (
    Checkpoint,
    Layout,
    Mark,
    boot_id,
    decode_mark,
    encode_mark,
    fsync_dir,
    read_checkpoint,
    write_checkpoint,
)
from eventstore.logfile import Tail, read_frames
from eventstore.records import AppendTo, RecordedEvent, encode_each, pack, unpack

FEED_START = framing.FILE_HEADER.size
SEGMENT_BYTES = 64 << 20  # a feed segment this large is sealed and the next one started
MAX_BATCH = 256
VERSION_CACHE = 50_000
OPEN_STREAMS = 64  # append descriptors kept open for streams written again soon
MARK_SIZE = 64

log = logging.getLogger("jobtrail.store")


def die(reason: BaseException) -> NoReturn:
    """Stop the process at once: continuing after a failed fsync could acknowledge lost data."""
    print(f"jobtrail: fatal storage error, stopping: {reason!r}", file=sys.stderr, flush=True)
    os._exit(70)


@dataclass(slots=True)
class Request:
    """One caller's append, queued for the next group commit."""

    batch: Sequence[AppendTo]
    result: list[list[RecordedEvent]] | None = None
    error: BaseException | None = None
    done: bool = False
    removes: tuple[str, ...] = ()  # a prune: streams whose logs go once its record is written


@dataclass(slots=True)
class _StreamState:
    version: int
    size: int


@dataclass(slots=True)
class _Planned:
    request: Request
    recorded: list[list[RecordedEvent]]
    events: list[RecordedEvent]
    feed_frame: bytes = b""
    stream_frames: list[tuple[str, int, bytes]] = field(default_factory=list)


class FileLog:
    """Appends and reads of one data directory; safe across threads and processes."""

    def __init__(
        self,
        root: Path,
        *,
        create: bool = True,
        readonly: bool = False,
        clock: Callable[[], datetime] = utcnow,
        fsync: Callable[[int], None] = os.fdatasync,
        on_fatal: Callable[[BaseException], NoReturn] = die,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.layout = Layout(Path(root))
        if create and not readonly:
            self.layout.create()
            self._ensure_feed()
        self.layout.require()
        if not readonly:
            self.layout.upgrade()  # format 1 -> 2: every other process must be stopped
        self.readonly = readonly
        self._clock = clock
        self._fsync = fsync
        self._on_fatal = on_fatal
        self._segment_bytes = segment_bytes
        self._segment = 1  # the first position of the segment `_feed_fd` appends to
        self._closed = False
        self._cond = threading.Condition()
        self._queue: list[Request] = []
        self._fresh: set[str] = set()  # cached versions checked since the last foreign write
        self._recovering = False
        self._commit_lock = threading.Lock()
        self._paths: dict[str, str] = {}
        self._leading = False
        self._versions: dict[str, _StreamState] = {}
        self._mark = Mark(FEED_START, 1)
        self._mark_raw = b""  # the mark's bytes as this process last wrote or read them
        self._reader = FeedReader(self.layout, self._current_mark)
        self._feed_fd = -1
        self._mark_fd = -1
        self._mark_map: mmap.mmap | None = None
        self._stream_fds: OrderedDict[str, int] = OrderedDict()
        if not readonly:
            try:
                self._open_writer()
            except BaseException:
                self._closed = True
                self._release()
                raise

    def _open_writer(self) -> None:
        self._mark_fd = os.open(self.layout.mark, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._mark_fd).st_size < MARK_SIZE:
            os.ftruncate(self._mark_fd, MARK_SIZE)
        # Shared memory with every process on this directory: no syscall per commit.
        self._mark_map = mmap.mmap(self._mark_fd, MARK_SIZE)
        with self._locked():
            self._open_recovery()

    # -- set-up and recovery ---------------------------------------------------------

    def _ensure_feed(self) -> None:
        if self.layout.feed.exists() and self.layout.feed.stat().st_size >= FEED_START:
            return
        fd = os.open(self.layout.feed, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size < FEED_START:
                os.ftruncate(fd, 0)
                os.write(fd, framing.file_header(framing.KIND_FEED))
                os.fsync(fd)
                fsync_dir(self.layout.feed_dir)
                write_checkpoint(self.layout.checkpoint, Checkpoint(boot_id(), FEED_START, 1))
        finally:
            os.close(fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The feed lock: on the mark file, the one feed file that is never replaced."""
        fcntl.flock(self._mark_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._mark_fd, fcntl.LOCK_UN)

    def _use_segment(self, first: int) -> None:
        """Append to the segment starting at `first` from now on (under the lock)."""
        path = self.layout.segment(first)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        if not framing.check_file_header(os.pread(fd, FEED_START, 0), framing.KIND_FEED):
            os.close(fd)
            raise CorruptionError(f"{path} has no valid header")
        if self._feed_fd >= 0:
            os.close(self._feed_fd)
        self._feed_fd, self._segment = fd, first

    def _open_recovery(self) -> None:
        """Under the lock: after a machine restart re-apply the feed from the checkpoint."""
        cp = read_checkpoint(self.layout.checkpoint)
        current_boot = boot_id()
        if cp is not None and cp.boot_id == current_boot:
            self._refresh()
            return
        # Unsynced page-cache writes of the stream logs may be gone: the feed is the truth.
        # The checkpoint is a position: its `end` is an offset a prune's rewrite of that
        # (sealed) segment may since have moved, so the walk starts at the beginning of
        # the checkpoint's segment and re-applies only the positions from its on.
        old = self._read_mark()
        compactions = old.compactions + 1 if old is not None else 0  # readers drop offsets
        start = Mark(FEED_START, 1, time.time_ns(), 1, compactions)
        synced_before = 1
        if cp is not None and self.layout.segment(cp.segment).exists():
            start = Mark(FEED_START, cp.segment, time.time_ns(), cp.segment, compactions)
            synced_before = cp.next_position
        self._mark = start
        self._recover_from(start, reconcile_streams=True, synced_before=synced_before)
        since = self.layout.checkpoint.stat().st_mtime_ns if cp is not None else 0
        self._cut_streams_ahead(self._mark.next_position, since - 10**10)
        os.sync()
        write_checkpoint(
            self.layout.checkpoint,
            Checkpoint(current_boot, self._mark.end, self._mark.next_position, self._segment),
        )

    def _cut_streams_ahead(self, next_position: int, since_ns: int) -> None:
        """Set aside stream-log records the feed lost in a machine restart (never acknowledged).

        Only logs written since the checkpoint can hold such records.
        """
        for path in self.layout.stream_files():
            st = path.stat()
            if st.st_mtime_ns < since_ns or st.st_size <= framing.FILE_HEADER.size:
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                tail = Tail(0, 1, 0)
                cut = None
                for f in read_frames(fd, framing.FILE_HEADER.size, 1, tail):
                    if unpack(f.payload)[-1].position >= next_position:
                        cut = f.offset
                        break
                if cut is not None:
                    self._set_aside(fd, path, cut, st.st_size)
            finally:
                os.close(fd)
        self._versions.clear()
        self._fresh.clear()

    def _refresh(self) -> None:
        """Under the lock: learn the feed's end, finishing a commit a dead holder left.

        If nobody else changed anything since this process last held the lock, its
        cached stream versions are still right and need no stat.
        """
        assert self._mark_map is not None
        raw = self._mark_map[:MARK_SIZE]
        if raw == self._mark_raw and self._feed_fd >= 0:
            if os.fstat(self._feed_fd).st_size == self._mark.end:
                return  # nobody else wrote since this process last held the lock
        mark = decode_mark(raw)
        if mark is None:  # lost or damaged: start over from the feed itself
            self._fresh.clear()
            self._mark = Mark(FEED_START, 1, time.time_ns())
            self._recover_from(self._mark, reconcile_streams=True)
            return
        if mark.segment != self._segment or self._feed_fd < 0:
            self._use_segment(mark.segment)  # another process started a segment
        size = os.fstat(self._feed_fd).st_size
        if mark != self._mark or size != mark.end:
            self._fresh.clear()  # someone else wrote: every cached version needs a stat
        if size < mark.end:
            raise CorruptionError(
                f"{self.layout.feed} is shorter than its mark ({size} < {mark.end})"
            )
        else:
            self._mark = mark
            self._mark_raw = raw
            if size > mark.end:
                self._recover_from(mark, reconcile_streams=False)

    def _recover_from(
        self, start: Mark, *, reconcile_streams: bool, synced_before: int = 1
    ) -> None:
        """Apply the complete feed records after `start` to the streams; set aside the rest.

        Events before position `synced_before` are known to be in their stream logs.
        """
        self._recovering = True
        try:
            self._recover(start, reconcile_streams=reconcile_streams, synced_before=synced_before)
        finally:
            self._recovering = False

    def _recover(self, start: Mark, *, reconcile_streams: bool, synced_before: int = 1) -> None:
        # Streams a tombstone in this range removes are not written back (a prune's record
        # may be whole while its holder died before it removed their logs): first find them.
        removed: set[str] = set()

        def find_removed(events: list[RecordedEvent]) -> None:
            removed.update(s for e in events if (s := retention.removed_stream(e.event)))

        def apply(events: list[RecordedEvent]) -> None:
            if events and events[0].position < synced_before:
                events = [e for e in events if e.position >= synced_before]
            self._apply_to_streams(events, check_all=reconcile_streams, removed=removed)

        self._walk_feed(start, find_removed)
        tail = self._walk_feed(start, apply)
        self._unlink_streams(removed)
        path = self.layout.segment(self._segment)
        if tail.damaged:
            raise CorruptionError(f"{path}: damage at offset {tail.end} followed by valid records")
        if tail.trailing and self._has_successor(self._segment):
            # Only the newest segment is ever appended to: a sealed one that does not run
            # whole to the next is damage, never a torn tail to cut off.
            raise CorruptionError(
                f"{path}: damaged record at offset {tail.end} in a sealed segment"
            )
        if tail.trailing:
            self._set_aside(self._feed_fd, path, tail.end, tail.size)
        self._sync(self._feed_fd)
        self._write_mark(tail.end, tail.next_seq)

    def _walk_feed(self, start: Mark, on_events: Callable[[list[RecordedEvent]], None]) -> Tail:
        """Hand the feed's records from `start` to `on_events`, following the segments.

        Ends appending to the last segment of the chain, and returns where it ended.
        """
        self._use_segment(start.segment)
        off, seq = start.end, start.next_position
        while True:
            tail = Tail(off, seq, 0)
            batch: list[RecordedEvent] = []
            for f in read_frames(self._feed_fd, off, seq, tail, look_past=True):
                batch.extend(unpack(f.payload))
                if len(batch) >= 10_000:
                    on_events(batch)
                    batch = []
            on_events(batch)
            nxt = tail.next_seq
            if tail.trailing or nxt == self._segment or not self._segment_ready(nxt):
                return tail
            self._use_segment(nxt)
            off, seq = FEED_START, nxt

    def _has_successor(self, first: int) -> bool:
        """Whether a later segment holds anything past its header (the chain went on)."""
        for later in self.layout.segments():
            if later > first:
                try:
                    if self.layout.segment(later).stat().st_size > FEED_START:
                        return True
                except FileNotFoundError:
                    pass
        return False

    def _segment_ready(self, first: int) -> bool:
        path = self.layout.segment(first)
        try:
            with open(path, "rb") as f:
                return framing.check_file_header(f.read(FEED_START), framing.KIND_FEED)
        except FileNotFoundError:
            return False

    def _apply_to_streams(
        self, events: list[RecordedEvent], *, check_all: bool, removed: set[str] | None = None
    ) -> None:
        """Append to each stream log the events of `events` it lacks (idempotent)."""
        by_stream: dict[str, list[RecordedEvent]] = {}
        for e in events:
            if removed is None or e.stream not in removed:
                by_stream.setdefault(e.stream, []).append(e)
        for stream, evs in by_stream.items():
            if check_all:
                self._versions.pop(stream, None)
            current = self._stream_state(stream).version
            missing = [e for e in evs if e.version > current]
            if not missing:
                continue
            if missing[0].version != current + 1:
                raise CorruptionError(
                    f"stream {stream} is at version {current} but the feed continues "
                    f"at {missing[0].version}"
                )
            payload = pack(encode_each(missing))
            record = framing.frame(missing[0].version, len(missing), payload)
            self._write_stream(stream, missing[-1].version, record)

    def _stream_named(self, path: Path) -> str:
        try:
            return self.layout.stream_of(path)
        except JobtrailError:
            return ""

    def _set_aside(self, fd: int, path: Path, end: int, size: int) -> None:
        """Copy the bytes after `end` to quarantine/, then cut the file back to `end`."""
        data = os.pread(fd, size - end, end)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        dest = self.layout.quarantine / f"{path.name}.torn-{end}-{stamp}-{os.getpid()}"
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        fsync_dir(self.layout.quarantine)
        os.ftruncate(fd, end)
        self._sync(fd)
        self._close_stream_fd(self._stream_named(path))

    def _read_mark(self) -> Mark | None:
        assert self._mark_map is not None
        return decode_mark(self._mark_map[:MARK_SIZE])

    def _write_mark(self, end: int, next_position: int, compactions: int | None = None) -> None:
        if compactions is None:
            compactions = self._mark.compactions
        mark = Mark(end, next_position, self._mark.generation + 1, self._segment, compactions)
        data = encode_mark(mark)
        assert self._mark_map is not None
        self._mark_map[: len(data)] = data
        self._mark = mark
        self._mark_raw = self._mark_map[:MARK_SIZE]

    def _sync(self, fd: int) -> None:
        try:
            self._fsync(fd)
        except OSError as exc:
            self._closed = True
            self._on_fatal(exc)

    # -- stream state, under the lock ------------------------------------------------

    def _path(self, stream: str) -> str:
        path = self._paths.get(stream)
        if path is None:
            if len(self._paths) >= VERSION_CACHE:
                self._paths.clear()
            path = self._paths[stream] = self.layout.stream_file(stream)
        return path

    def _stream_state(self, stream: str) -> _StreamState:
        """Under the lock: the stream's version, checked against its file's size.

        Other processes append too, so a cached version holds only while the size does
        (checked once per commit). A torn tail (a holder died mid-write) is set aside
        here, before anyone appends.
        """
        cached = self._versions.get(stream)
        if cached is not None and stream in self._fresh:
            return cached
        path = self._path(stream)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if cached is not None and cached.size == size:
            self._fresh.add(stream)
            return cached
        if size < framing.FILE_HEADER.size:
            state = _StreamState(0, size)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                if not framing.check_file_header(os.pread(fd, framing.FILE_HEADER.size, 0), 1):
                    raise CorruptionError(f"{path} has no valid header")
                start, seq = framing.FILE_HEADER.size, 1
                if cached is not None and framing.FILE_HEADER.size <= cached.size < size:
                    start, seq = cached.size, cached.version + 1
                tail = Tail(start, seq, size)
                for _ in read_frames(fd, start, seq, tail, look_past=True):
                    pass
                if tail.damaged:
                    raise CorruptionError(
                        f"{path}: damage at offset {tail.end} followed by valid records"
                    )
                if tail.trailing and not self._recovering:
                    # Only a holder that died mid-copy leaves a torn stream tail, and then
                    # the feed is longer than the mark: anything else is damage.
                    raise CorruptionError(f"{path}: damaged record at offset {tail.end}")
                if tail.trailing:
                    self._set_aside(fd, Path(path), tail.end, tail.size)
                state = _StreamState(tail.next_seq - 1, tail.end)
            finally:
                os.close(fd)
        if len(self._versions) >= VERSION_CACHE:
            self._versions.clear()
            self._fresh.clear()
        self._versions[stream] = state
        self._fresh.add(stream)
        return state

    def _write_stream(self, stream: str, last_version: int, record: bytes) -> None:
        state = self._stream_state(stream)
        if state.size < framing.FILE_HEADER.size:
            self._close_stream_fd(stream)
            fd = os.open(self._path(stream), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if state.size:
                    os.ftruncate(fd, 0)  # a header torn by a crash: nothing else was there
                record = framing.file_header(framing.KIND_STREAM) + record
                _write_all(fd, record)
            finally:
                os.close(fd)
            size = len(record)
        else:
            _write_all(self._stream_fd(stream), record)
            size = state.size + len(record)
        self._versions[stream] = _StreamState(last_version, size)

    def _unlink_streams(self, removed: Iterable[str]) -> None:
        """Under the lock: delete removed streams' logs (their directories are synced later)."""
        for stream in removed:
            self._close_stream_fd(stream)
            self._versions.pop(stream, None)
            self._fresh.discard(stream)
            try:
                os.unlink(self._path(stream))
            except FileNotFoundError:
                pass

    def _roll(self) -> None:
        """Under the lock: seal the active segment and start the next at the next position.

        The sealed segment is synced first: another process's fsync of the new segment
        must not make later records durable while earlier ones could still be lost.
        Segments a holder left after the mark's (it died starting one) are removed.
        """
        first = self._mark.next_position
        if first == self._segment:
            return  # the active segment holds no record yet
        self._sync(self._feed_fd)
        for orphan in self.layout.segments():
            if orphan > self._segment and orphan != first:
                self.layout.segment(orphan).unlink(missing_ok=True)
        path = self.layout.segment(first)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _write_all(fd, framing.file_header(framing.KIND_FEED))
            self._sync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.layout.feed_dir)
        self._use_segment(first)
        self._write_mark(FEED_START, first)

    def _stream_fd(self, stream: str) -> int:
        """An append descriptor of an existing stream log, kept open for the next append."""
        fd = self._stream_fds.get(stream)
        if fd is not None:
            self._stream_fds.move_to_end(stream)
            return fd
        fd = os.open(self._path(stream), os.O_WRONLY | os.O_APPEND)
        self._stream_fds[stream] = fd
        if len(self._stream_fds) > OPEN_STREAMS:
            os.close(self._stream_fds.popitem(last=False)[1])
        return fd

    def _close_stream_fd(self, stream: str) -> None:
        fd = self._stream_fds.pop(stream, None)
        if fd is not None:
            os.close(fd)

    # -- appending ---------------------------------------------------------------------

    def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        """Append to several streams, all or nothing, durable on return (group commit).

        Callers in threads share commits: one of them leads a batch while the others wait.
        """
        if self.readonly:
            raise StorageError("store opened read-only")
        planning.validate(batch)
        request = Request(batch)
        taken: list[Request] = []
        with self._cond:
            self._queue.append(request)
            while not request.done and self._leading:
                self._cond.wait()
            if not request.done:
                self._leading = True
                self._queue.remove(request)
                others, self._queue = self._queue[: MAX_BATCH - 1], self._queue[MAX_BATCH - 1 :]
                taken = [request, *others]
        if taken:
            try:
                self.commit(taken)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def commit(
        self, requests: list[Request], more: Callable[[], list[Request]] | None = None
    ) -> None:
        """Decide and write a batch; every request ends with a result or an error.

        `more` is asked for requests that arrived while the lock was awaited (other
        processes may hold it for a while), so they share this commit.
        """
        try:
            if self._closed:
                raise StoreClosed("store is closed")
            with self._commit_lock:
                landed: list[_Planned] = []
                fcntl.flock(self._mark_fd, fcntl.LOCK_EX)
                try:
                    if more is not None:
                        requests.extend(more())
                    self._refresh()
                    if self._mark.end >= self._segment_bytes:
                        self._roll()
                    planned = self._plan(requests)
                    if planned:
                        landed = self._write(planned)
                finally:
                    fcntl.flock(self._mark_fd, fcntl.LOCK_UN)
                if landed:
                    # The commit point, outside the lock: another process can write its
                    # batch meanwhile, and the kernel joins concurrent fsyncs in one
                    # journal commit (group commit across processes). This fsync covers
                    # every byte before ours too, whoever wrote it.
                    self._sync(self._feed_fd)
                    for p in landed:
                        p.request.result = p.recorded
        except BaseException as exc:
            for r in requests:
                if r.result is None and r.error is None:
                    r.error = exc if isinstance(exc, JobtrailError) else _storage_error(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            for r in requests:
                if r.result is None and r.error is None:
                    r.error = StorageError("append was not completed")
                r.done = True

    def _plan(self, requests: list[Request]) -> list[_Planned]:
        """Decide every request in order; later requests see earlier ones of the batch."""
        overlay: dict[str, int] = {}
        pending: dict[tuple[str, str], RecordedEvent] = {}
        position = self._mark.next_position
        now = self._clock()
        out = []

        def version_of(stream: str) -> int:
            return overlay[stream] if stream in overlay else self._stream_state(stream).version

        def lookup(stream: str, event_id: str) -> RecordedEvent | None:
            return pending.get((stream, event_id)) or self._lookup(stream, event_id)

        for r in requests:
            try:
                if not r.removes:
                    retention.refuse_tombstones(r.batch)
                recorded, fresh = planning.plan(
                    r.batch, version_of=version_of, lookup=lookup, next_position=position, now=now
                )
            except JobtrailError as exc:
                r.error = exc
                continue
            events = [e for group in recorded for e in group]
            if not fresh or not events:
                r.result = recorded
                continue
            planned = _Planned(r, recorded, events)
            try:
                _encode(planned)
            except EventTooLarge as exc:
                r.error = exc
                continue
            for e in events:
                overlay[e.stream] = e.version
                pending[(e.stream, e.id)] = e
            position = events[-1].position + 1
            out.append(planned)
        return out

    def _write(self, planned: list[_Planned]) -> list[_Planned]:
        """Write the feed, the stream logs and the mark; the caller makes them durable."""
        start = self._mark.end
        landed = self._write_feed(planned, start)
        # The stream logs are written before the fsync: readers may see a record as soon
        # as it is written, in the feed and in a stream log alike, and after a process
        # crash the page cache keeps both. Only a machine restart can lose the feed's
        # tail while a stream log kept it: `_open_recovery` cuts such logs back.
        if any(p.request.removes for p in landed):
            # A prune: its tombstones are made durable before any log goes, so a machine
            # restart never finds a log removed whose tombstone was lost.
            self._sync(self._feed_fd)
        for p in landed:
            for stream, last_version, record in p.stream_frames:
                self._write_stream(stream, last_version, record)
            if p.request.removes:  # a prune: its tombstones are written, its streams go
                self._unlink_streams(p.request.removes)
        end = start + sum(len(p.feed_frame) for p in landed)
        self._write_mark(end, landed[-1].events[-1].position + 1)
        return landed

    def _write_feed(self, planned: list[_Planned], start: int) -> list[_Planned]:
        """Write the batch to the feed; on a short or failed write keep only whole records.

        A record that is whole in the feed is visible to readers at once, so it stays:
        its request is committed. A partial record is cut off, so nothing half-written
        remains, and the requests from it on get a StorageError.
        """
        data = b"".join(p.feed_frame for p in planned)
        written = 0
        error: OSError | None = None
        while written < len(data):
            try:
                n = os.write(self._feed_fd, data[written:])
            except OSError as exc:
                error = exc
                break
            if n == 0:
                error = OSError(errno.ENOSPC, "short write")
                break
            written += n
        if error is None:
            return planned
        landed: list[_Planned] = []
        whole = 0
        for p in planned:
            if whole + len(p.feed_frame) > written:
                break
            whole += len(p.feed_frame)
            landed.append(p)
        os.ftruncate(self._feed_fd, start + whole)
        for p in planned[len(landed) :]:
            p.request.error = _storage_error(error)
        if not landed:
            raise _storage_error(error)
        return landed

    # -- retention -----------------------------------------------------------------------

    def prune(
        self, batch: Sequence[AppendTo], *, rewrite: bool = True
    ) -> list[list[RecordedEvent]]:
        """Append tombstones and remove the streams they name, all or nothing (retention.py).

        Then the segments that held the removed events are rewritten without them (the
        active one is sealed first if it held some). With `rewrite=False` that is left to
        `compact()` (or the next prune): a backlog pruned in many batches rewrites each
        segment once. One prune at a time per data directory; a prune that died half way
        is finished by the next one.
        """
        if self.readonly:
            raise StorageError("store opened read-only")
        planning.validate(batch)
        removes = retention.removed_streams(batch)
        retention.tombstones_only(batch)
        with self._prune_locked():
            if rewrite:
                self._finish_prune()
            positions = [e.position for s in removes for e in self.read_stream(s)]
            segments = retention.segments_of(positions, self.layout.segments(self._segment_hint()))
            retention.add_todo(self.layout.prune_todo, retention.Todo(segments, removes))
            request = Request(batch, removes=tuple(removes))
            self.commit([request])
            if request.error is not None:
                raise request.error  # the todo's line removes nothing: its streams stay
            assert request.result is not None
            for shard in {os.path.dirname(self._path(s)) for s in removes}:
                fsync_dir(Path(shard))
            if rewrite:
                self._finish_prune()
            return request.result

    def compact(self) -> None:
        """Finish what a prune that died half way left: rewrite the segments it named."""
        if self.readonly:
            raise StorageError("store opened read-only")
        with self._prune_locked():
            self._finish_prune()

    def _segment_hint(self) -> int | None:
        mark = self._current_mark()
        return mark.segment if mark is not None else None

    @contextmanager
    def _prune_locked(self) -> Iterator[None]:
        fd = os.open(self.layout.prune_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _finish_prune(self) -> None:
        """Under the prune lock: rewrite the segments the todo names, then drop it.

        Only events of streams whose log is gone are taken out: a todo written by a prune
        that died before its record landed names streams that still exist, and stay. The
        feed lock is taken first and the feed recovered (a dead holder's prune record may
        still have logs to remove), and the active segment is sealed if the todo names it.
        """
        retention.remove_leftovers(self.layout.feed_dir)
        todo = retention.read_todo(self.layout.prune_todo)
        if todo is None:
            self.layout.prune_todo.unlink(missing_ok=True)
            return
        with self._commit_lock, self._locked():
            self._refresh()
            if self._segment in todo.segments:
                self._roll()
            active = self._segment
        gone = {s for s in todo.streams if not os.path.exists(self._path(s))}
        firsts = self.layout.segments(active)
        rewritten = 0
        for first in todo.segments:
            if first >= active or first not in firsts:
                continue  # nothing of it was written (the roll found it empty)
            nxt = firsts[firsts.index(first) + 1]
            try:
                if retention.rewrite_segment(self.layout, first, nxt, gone.__contains__):
                    rewritten += 1
            except CorruptionError as exc:
                # Left as it is (its removed events stay, `verify` tells of the damage):
                # one damaged segment must not stop every later prune.
                log.error("prune: segment %s not rewritten: %s", first, exc)
        if rewritten:
            with self._commit_lock, self._locked():
                self._refresh()
                mark = self._mark
                self._write_mark(mark.end, mark.next_position, mark.compactions + 1)
        self.layout.prune_todo.unlink(missing_ok=True)
        fsync_dir(self.layout.feed_dir)

    # -- reading, without the lock -----------------------------------------------------

    def _lookup(self, stream: str, event_id: str) -> RecordedEvent | None:
        for e in self.read_stream(stream):
            if e.id == event_id:
                return e
        return None

    def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        """The valid events of a stream's log from `from_version` on."""
        path = self._path(stream)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            if not framing.check_file_header(os.pread(fd, framing.FILE_HEADER.size, 0), 1):
                return []
            out: list[RecordedEvent] = []
            tail = Tail(0, 1, 0)
            for f in read_frames(fd, framing.FILE_HEADER.size, 1, tail):
                if f.seq + f.count > from_version:
                    out.extend(e for e in unpack(f.payload) if e.version >= from_version)
            return out
        finally:
            os.close(fd)

    def stream_version(self, stream: str) -> int:
        events = self.read_stream(stream)
        return events[-1].version if events else 0

    def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events of the feed's valid prefix from `from_position` on."""
        out: list[RecordedEvent] = []
        if limit <= 0:
            return out
        from_position = max(from_position, 1)
        for f in self._frames_from(from_position):
            if f.seq + f.count <= from_position:
                continue
            for e in unpack(f.payload):
                if e.position >= from_position:
                    out.append(e)
            if len(out) >= limit:
                break
        return out[:limit]

    def iter_all(self, from_position: int = 1) -> Iterator[list[RecordedEvent]]:
        """Every event of the feed from `from_position` on, one record at a time.

        Records a prune emptied (holes) are skipped: every list holds an event.
        """
        for f in self._frames_from(from_position):
            if f.seq + f.count > from_position:
                events = [e for e in unpack(f.payload) if e.position >= from_position]
                if events:
                    yield events

    def head(self) -> int:
        """The last position of the feed's valid prefix (a prune's hole counts too)."""
        hint = self._reader.hint[0]
        last = 0
        for f in self._frames_from(hint):
            last = f.seq + f.count - 1
        return max(last, hint - 1)

    def frames(self, position: int = 1) -> Iterator[framing.Frame]:
        """The feed's valid records from the one holding `position`, across segments.

        A record a prune emptied has no event; one it thinned holds fewer than `count`.
        Raises CorruptionError at damage that was complete before the read began.
        """
        return self._reader.frames(position)

    def _frames_from(self, position: int) -> Iterator[framing.Frame]:
        """Frames from the one holding `position` (or an earlier one): see FeedReader."""
        return self._reader.frames(position)

    def written_end(self) -> int | None:
        """The next position as the feed's mark says now: every position below it is
        written. Read without the lock, so None when the mark is caught mid-write (its
        checksum fails) or the log is closed; no system call, cheap enough for the loop."""
        mapped = self._mark_map
        if mapped is None:
            return None
        try:
            mark = decode_mark(mapped[:MARK_SIZE])
        except ValueError:  # closed by another thread meanwhile
            return None
        return None if mark is None else mark.next_position

    def _current_mark(self) -> Mark | None:
        if self._mark_map is not None:
            return self._read_mark()
        try:
            return decode_mark(self.layout.mark.read_bytes())
        except OSError:
            return None

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Sync what the stream logs hold and record a checkpoint, then close the files."""
        if self._closed and self._feed_fd < 0:
            return
        was_open = not self._closed
        self._closed = True
        with self._cond:
            while self._leading:
                self._cond.wait()
        if self._feed_fd >= 0 and was_open:
            with self._commit_lock, self._locked():
                mark = self._read_mark()
                if mark is not None:
                    os.sync()
                    write_checkpoint(
                        self.layout.checkpoint,
                        Checkpoint(boot_id(), mark.end, mark.next_position, mark.segment),
                    )
        self._release()

    def _release(self) -> None:
        for fd in self._stream_fds.values():
            os.close(fd)
        self._stream_fds.clear()
        if self._mark_map is not None:
            self._mark_map.close()
            self._mark_map = None
        for fd in (self._feed_fd, self._mark_fd):
            if fd >= 0:
                os.close(fd)
        self._feed_fd = self._mark_fd = -1


class EventTooLarge(JobtrailError):
    """One append's events encode to more than a record may hold."""

    code = "PayloadTooLarge"
    status = 413


def _encode(p: _Planned) -> None:
    """Frame the feed record and the stream records of one append (payloads encoded once)."""
    encoded = encode_each(p.events)
    whole = pack(encoded)
    if len(whole) > framing.MAX_PAYLOAD:
        raise EventTooLarge(f"an append may hold at most {framing.MAX_PAYLOAD} bytes of events")
    p.feed_frame = framing.frame(p.events[0].position, len(p.events), whole)
    i = 0
    for group in p.recorded:
        if group:
            one = len(group) == len(p.events)
            payload = whole if one else pack(encoded[i : i + len(group)])
            record = framing.frame(group[0].version, len(group), payload)
            p.stream_frames.append((group[0].stream, group[-1].version, record))
        i += len(group)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n == 0:
            raise OSError(errno.ENOSPC, "short write")
        view = view[n:]


def _storage_error(exc: BaseException) -> StorageError:
    return StorageError(f"storage could not be written: {exc}")
