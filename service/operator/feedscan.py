"""Reading a data directory's feed for `replay` and `verify`: read-only, in order, with progress.

The logs are opened read-only (no lock, no recovery, nothing changed), so these commands
run beside live `serve` and `worker` processes and see the feed's valid prefix as it was
when each record was read. Damage before the feed's mark stops the scan where it starts,
and the caller reports it instead of crashing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Generic, Self, TypeVar

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from eventstore import framing
from eventstore.errors import StorageError
from eventstore.filelog import FileLog
from eventstore.layout import Layout, NotADataDirectory, decode_mark
from eventstore.logfile import Tail, read_frames
from eventstore.records import RecordedEvent, unpack
from eventstore.verify import Finding, Report, verify
from projections.model import ReadModel
from projections.runner import Projection

PageFn = Callable[[list[RecordedEvent]], object]
T = TypeVar("T")


def open_feed(data: Path) -> FileLog:
    """The data directory's logs, read-only.

    Raises NotADataDirectory for a missing or foreign directory (a usage error), and
    StorageError when its feed cannot be opened.
    """
    Layout(data).require()
    try:
        return FileLog(data, create=False, readonly=True)
    except OSError as exc:
        raise StorageError(f"cannot open the feed of {data}: {exc.strerror or exc}") from exc


def head_hint(log: FileLog) -> int | None:
    """The feed's last position as its mark says, without reading the feed: a bar's total."""
    try:
        mark = decode_mark(log.layout.mark.read_bytes())
    except OSError:
        return None
    return mark.next_position - 1 if mark is not None else None


class Bar:
    """A rich progress bar on standard error when that is a terminal; nothing otherwise."""

    def __init__(self, description: str, total: int | None, *, show: bool | None = None) -> None:
        self._progress: Progress | None = None
        if show if show is not None else sys.stderr.isatty():
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total)

    def update(self, completed: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class Scan(msgspec.Struct):
    """How far a scan of the feed went."""

    events: int = 0
    position: int = 0  # the last position applied
    recorded_at: datetime | None = None  # that event's time
    event_id: str | None = None  # and its id
    damage: str | None = None  # why the feed could not be read further


def scan_feed(
    log: FileLog,
    on_page: PageFn,
    *,
    until: int | None = None,
    until_time: datetime | None = None,
    bar: Bar | None = None,
) -> Scan:
    """Hand every event of the feed to `on_page`, one record's events at a time, in order.

    Stops after position `until`, or before the first event recorded after `until_time`.
    Reads the feed's valid prefix in 1 MiB chunks: per record, only the decode and the
    call. Valid records ending before the feed's mark were whole before the scan began,
    so the prefix ending there is damage (as `FileLog.read_all` says), not an append in
    flight.
    """
    scan = Scan()
    limit = until if until is not None else 1 << 62
    feed = log.layout.feed
    try:
        mark = decode_mark(log.layout.mark.read_bytes())
    except OSError:
        mark = None
    fd = os.open(feed, os.O_RDONLY)
    tail = Tail(framing.FILE_HEADER.size, 1, 0)
    events: list[RecordedEvent] = []  # the last page handed on
    records = count = 0
    stopped = False
    try:
        for frame in read_frames(fd, framing.FILE_HEADER.size, 1, tail):
            page = unpack(frame.payload)
            if frame.seq + frame.count - 1 > limit or (
                until_time is not None and page[-1].recorded_at > until_time
            ):
                stopped = True
                page = [
                    e
                    for e in page
                    if e.position <= limit and (until_time is None or e.recorded_at <= until_time)
                ]
                if page:
                    on_page(page)
                    count += len(page)
                    events = page
                break
            events = page
            on_page(events)
            count += frame.count
            records += 1
            if not records & 1023 and bar is not None:
                bar.update(frame.seq + frame.count - 1)
        if not stopped and mark is not None and tail.end < mark.end:
            scan.damage = f"{feed}: damaged record at offset {tail.end}"
    except msgspec.DecodeError as exc:  # a record whose checksum holds but does not decode
        scan.damage = f"{feed}: undecodable record: {exc}"
    finally:
        os.close(fd)
    if events:
        last = events[-1]
        scan.position, scan.recorded_at, scan.event_id = last.position, last.recorded_at, last.id
    scan.events = count
    return scan


PARALLEL_BYTES: Final = 64 << 20
"""A feed at least this large is worth a second process (started in about half a second)."""


def worth_parallel(log: FileLog) -> bool:
    """Whether a second process would shorten a pass over this feed: a large feed, two CPUs."""
    try:
        size = log.layout.feed.stat().st_size
    except OSError:
        return False
    return size >= PARALLEL_BYTES and (os.cpu_count() or 1) >= 2


def folder(projections: Sequence[Projection]) -> PageFn:
    """Apply each event of a page to every projection, in their order: the plain fold."""
    applies = tuple(p.apply for p in projections)

    def fold(events: list[RecordedEvent]) -> None:
        for event in events:
            for apply in applies:
                apply(event)

    return fold


class Folded(msgspec.Struct, frozen=True):
    """Projections folded by a partner process: their dumped states, and how far it went."""

    states: dict[str, bytes]
    scan: Scan


def fold_part(data: Path, names: Sequence[str], until: int) -> Folded:
    """Fold the feed through `until` into the named projections of a fresh read model."""
    model = ReadModel()
    part = [p for p in model.projections if p.name in names]
    with closing(open_feed(data)) as log:
        scan = scan_feed(log, folder(part), until=until)
    return Folded({p.name: p.dump() for p in part}, scan)


def store_check(data: Path) -> Report:
    """`eventstore.verify`, with files it cannot read reported instead of raised."""
    try:
        return verify(data)
    except NotADataDirectory:
        raise
    except OSError as exc:  # a file vanished or cannot be read: say so, never crash
        where = Path(exc.filename).name if exc.filename else str(data)
        finding = Finding("error", "bad_file", where, f"cannot be read: {exc.strerror or exc}")
        return Report(findings=[finding])
    except msgspec.DecodeError as exc:  # a record whose checksum holds but does not decode
        return Report(findings=[Finding("error", "damage", str(data), f"undecodable: {exc}")])


class Partner(Generic[T]):
    """Half of a pass in another process: `python -m service.operator.feedscan ...`.

    A plain child process rather than multiprocessing: nothing of this process (its main
    module, its threads) is re-imported or forked. Its answer is msgpack on its stdout.
    """

    def __init__(self, answer: type[T], *argv: str) -> None:
        self._answer = answer
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "service.operator.feedscan", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def result(self) -> T | None:
        """The partner's answer; None if it failed (the caller then does that half itself)."""
        out, err = self._proc.communicate()
        why = f"exit status {self._proc.returncode}"
        if self._proc.returncode == 0:
            try:
                return msgspec.msgpack.decode(out, type=self._answer)
            except msgspec.DecodeError as exc:
                why = str(exc)
        last = err.decode(errors="replace").strip().splitlines()[-1:]
        print(
            f"jobtrail: a second process failed ({why}{': ' if last else ''}{''.join(last)}); "
            "doing its part in this one",
            file=sys.stderr,
        )
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc.poll() is None:  # left early (an error, ^C): end it, by its own pid
            self._proc.kill()
            self._proc.communicate()


def _partner_main(argv: Sequence[str]) -> int:
    """`fold DATA UNTIL NAME...` or `store-check DATA`: the answer as msgpack on stdout."""
    if argv[0] == "fold":
        answer: object = fold_part(Path(argv[1]), argv[3:], int(argv[2]))
    else:
        answer = store_check(Path(argv[1]))
    sys.stdout.buffer.write(msgspec.msgpack.encode(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(_partner_main(sys.argv[1:]))
