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
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Generic, Protocol, Self, TypeVar

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

from eventstore.errors import CorruptionError, StorageError
from eventstore.filelog import FileLog
from eventstore.layout import Layout, NotADataDirectory, decode_mark
from eventstore.records import RecordedEvent
from eventstore.verify import Finding, Report, verify
from projections.listings import JobListings
from projections.model import ReadModel
from projections.runner import Projection

PageFn = Callable[[list[RecordedEvent]], object]
ApplyFn = Callable[[RecordedEvent], object]
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
    batch: int = 1,
) -> Scan:
    """Hand every event of the feed to `on_page`, one record's events at a time, in order.

    Stops after position `until`, or before the first event recorded after `until_time`.
    Reads through `FileLog.iter_all`, the store's own reader of the feed's valid prefix
    (whatever files the feed is kept in): per record, only the decode and the call. Its
    CorruptionError (the valid prefix ends before the feed's mark: damage, not an append
    in flight) and an undecodable record end the scan with `damage` set.

    With `batch` > 1, a page holds that many records' events (for a fold that does not
    care where a record ends: a call per record cost a rebuild 4%); the events read
    before damage are still all handed on.
    """
    scan = Scan()
    limit = until if until is not None else 1 << 62
    held: list[RecordedEvent] = []  # read, not handed on yet
    last_handed: RecordedEvent | None = None
    records = count = 0
    try:
        for page in log.iter_all(1):
            last = page[-1]
            if last.position > limit or (until_time is not None and last.recorded_at > until_time):
                held += [
                    e
                    for e in page
                    if e.position <= limit and (until_time is None or e.recorded_at <= until_time)
                ]
                break
            records += 1
            if batch == 1:
                on_page(page)
                count += len(page)
                last_handed = last
            else:
                held += page
                if not records % batch:
                    on_page(held)
                    count += len(held)
                    last_handed, held = last, []
            if not records & 1023 and bar is not None:
                bar.update(last.position)
    except CorruptionError as exc:
        scan.damage = str(exc)
    except msgspec.DecodeError as exc:  # a record whose checksum holds but does not decode
        scan.damage = f"{log.layout.feed}: undecodable record: {exc}"
    if held:
        on_page(held)
        count += len(held)
        last_handed = held[-1]
    if last_handed is not None:
        last = last_handed
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


def cpu_to_spare(samples: int = 5, gap: float = 0.01) -> bool:
    """Whether a CPU is free now for a partner that repeats this process's whole read.

    Such a partner pays only on a CPU of its own: beside another busy process it slows
    this one down instead (a rebuild of 1,000,000 events took 7.0 s alone and 7.3-9.0 s
    with a partner while another test suite ran on the second of two CPUs). Counts the
    tasks runnable now (`/proc/loadavg`, this one included), the median of a few samples.
    """
    counts: list[int] = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].partition("/")[0]))
        except (OSError, ValueError, IndexError):
            return True  # no way to tell: assume an idle machine
        if i < samples - 1:
            time.sleep(gap)
    others = sorted(counts)[len(counts) // 2] - 1
    return others < (os.cpu_count() or 1) - 1


class Fold(Protocol):
    """What `folder` calls: a projection, or a rebuild's own fold of one (`JobRebuild`)."""

    def apply(self, recorded: RecordedEvent) -> object: ...


def folder(projections: Sequence[Fold]) -> PageFn:
    """Apply each event of a page to every projection, in their order: the plain fold.

    A projection that declares the event types it `folds` is not called for the others
    (its `apply` ignores them anyway): most projections care for a few events in a hundred.
    Each event type gets one callable, so the common event (one projection) is one call.
    """
    by_type: dict[type, ApplyFn] = {}

    def apply_to(kind: type) -> ApplyFn:
        found = by_type[kind] = _together([p.apply for p in projections if _folds(p, kind)])
        return found

    def fold(events: list[RecordedEvent]) -> None:
        get = by_type.get
        for recorded in events:
            kind = type(recorded.event)
            (get(kind) or apply_to(kind))(recorded)

    return fold


def _together(applies: Sequence[ApplyFn]) -> ApplyFn:
    """One callable for the projections an event type goes to, in their order."""
    if len(applies) == 1:
        return applies[0]
    if not applies:
        return _skip

    def each(recorded: RecordedEvent) -> None:
        for apply in applies:
            apply(recorded)

    return each


def _skip(recorded: RecordedEvent) -> None:
    """For events no projection folds."""


def _folds(projection: Fold, kind: type) -> bool:
    folds: tuple[type, ...] | None = getattr(projection, "folds", None)
    return folds is None or issubclass(kind, folds)


class Folded(msgspec.Struct, frozen=True):
    """Projections folded by a partner process: their dumped states, and how far it went.

    Listings come as `JobListings.pack()` (load them with `unpack`), the others as `dump()`.
    """

    states: dict[str, bytes]
    scan: Scan


def fold_part(data: Path, names: Sequence[str], until: int) -> Folded:
    """Fold the feed through `until` into the named projections of a fresh read model."""
    model = ReadModel()
    part = [p for p in model.projections if p.name in names]
    with closing(open_feed(data)) as log:
        scan = scan_feed(log, folder(part), until=until, batch=256)
    return Folded({p.name: _handed(p) for p in part}, scan)


def _handed(projection: Projection) -> bytes:
    """A projection's state for the process that asked: a listing's packed, quicker to load."""
    return projection.pack() if isinstance(projection, JobListings) else projection.dump()


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
    """Half of a pass in another process: `python -m service.operator.feedscan ...`, or
    another `module` that answers the same way (`eventstore.shared_logs`).

    A plain child process rather than multiprocessing: nothing of this process (its main
    module, its threads) is re-imported or forked. Its answer is msgpack on its stdout.
    """

    def __init__(
        self, answer: type[T], *argv: str, module: str = "service.operator.feedscan"
    ) -> None:
        self._answer = answer
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def result(self, timeout: float | None = None) -> T | None:
        """The partner's answer; None if it failed or gave none within `timeout` seconds
        (it is then ended, and the caller does that half itself)."""
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, err = self._proc.communicate()
            err += f"no answer within {timeout:g} s".encode()
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

    def stop(self) -> None:
        """End it now, if it is still running (by its own pid), and reap it."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.communicate()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc.poll() is None:  # left early (an error, ^C): end it, by its own pid
            self.stop()


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
