"""`jobtrail import FILE`: an export's events into an empty data directory, as they were.

Event ids, stream versions and recording times are kept: the store is opened with a
clock set to each event's `recorded_at` before its append, and events that share a time
and follow one another in the feed are appended together (they were one commit).
Every append names the version the event's stream must be at (its `version` - 1), so a
file with a gap or a repeated line stops at that line; what was imported before it is
whole and valid.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, get_args

import msgspec

from eventstore import streams
from eventstore.clock import SetClock
from eventstore.errors import InvalidId, JobtrailError, StorageError, WrongExpectedVersion
from eventstore.events import AnyEvent, Event
from eventstore.filelog import FileLog
from eventstore.framing import MAX_PAYLOAD
from eventstore.layout import NotADataDirectory
from eventstore.records import AppendTo, NewEvent
from service.operator import command_parser
from service.operator.feedscan import Bar

DESCRIPTION = """\
Reads an export of `jobtrail export` (NDJSON, one event a line; FILE or - for standard
input) into DATA, which must hold no events (it is created if missing). Event ids,
stream versions, recording times and the order of the feed are kept, so the imported
store folds to the same projections as the exported one, and exporting it again gives
the same lines. Positions are numbered from 1 in the file's order: they equal the
original ones for an export of a whole store.

Every line is checked before it is appended: its fields, a known event type, data that
is an event of that type, a valid stream name, positions that increase. An event must
be the next version of its stream: a gap or a repeated event stops the import at its
line. What was imported before that line stays valid (whole appends only); nothing from
it on is imported. With a terminal on standard error, a progress bar goes there.

Run it before any serve or worker process uses DATA. The events are made durable all at
once when the import ends (one sync instead of one per append); an import cut short by
a machine crash is run again after deleting DATA.
"""

EPILOG = """\
exit status:
  0  every event was imported
  1  a line is malformed, out of order or not the next version of its stream (the
     message names the line); DATA already holds events; FILE cannot be read
  2  bad usage: FILE does not exist, or DATA is not a directory or holds something
     other than a jobtrail data directory
"""

PROGRESS_EVERY: Final = 1024
"""Lines between progress updates."""


class ExportedEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of an export, as `service.operator.export.export_line` writes it."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    job_id: str | None
    version: Annotated[int, msgspec.Meta(ge=1)]
    position: Annotated[int, msgspec.Meta(ge=1)]
    type: str
    recorded_at: Annotated[datetime, msgspec.Meta(tz=True)]
    data: msgspec.Raw
    stream: str


_LINE: Final = msgspec.json.Decoder(ExportedEvent)
_KEYS: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_EVENTS: Final[dict[str, type[Event]]] = {
    str(cls.__struct_config__.tag): cls for cls in get_args(AnyEvent)
}
_DECODERS: Final = {tag: msgspec.json.Decoder(cls) for tag, cls in _EVENTS.items()}
_FIELDS: Final = {tag: frozenset(cls.__struct_fields__) for tag, cls in _EVENTS.items()}


class UsageError(ValueError):
    """A flag or argument that cannot be used (exit 2)."""


class BadLine(Exception):
    """A line that cannot be imported; nothing from it on is."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(f"line {line}: {why}")
        self.line = line


class ImportSettings(msgspec.Struct, frozen=True):
    data: Path
    file: Path | None  # None: standard input


class Imported(msgspec.Struct):
    """How far an import went."""

    events: int = 0
    streams: int = 0  # streams begun (events of version 1)
    appends: int = 0
    position: int = 0  # the store's last position


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "import",
        summary="read an export into an empty data directory, keeping ids, versions and times",
        description=DESCRIPTION,
        epilog=EPILOG,
        data_help="the data directory to fill: missing, or holding no events (JOBTRAIL_DATA, "
        "./jobtrail-data)",
    )
    p.add_argument("file", metavar="FILE", help="an NDJSON export, or - for standard input")


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except UsageError as exc:
        print(f"jobtrail import: {exc}", file=sys.stderr)
        return 2
    clock = SetClock()
    try:
        log = _open_empty(settings.data, clock)
    except NotADataDirectory as exc:
        print(f"jobtrail import: {exc}", file=sys.stderr)
        return 2
    except _NotEmpty as exc:
        print(f"jobtrail import: {exc}", file=sys.stderr)
        return 1
    except (StorageError, OSError) as exc:
        print(f"jobtrail import: cannot open {settings.data}: {exc}", file=sys.stderr)
        return 1
    name = str(settings.file) if settings.file is not None else "standard input"
    importer = Importer(log, clock)
    try:
        with _source(settings.file) as (lines, total):
            with Bar("importing events", total) as bar:
                importer.run(lines, bar)
    except BadLine as exc:
        print(f"jobtrail import: {name} {exc}", file=sys.stderr)
        print(f"jobtrail import: {_so_far(importer.done, exc.line)}", file=sys.stderr)
        return 1
    except (StorageError, OSError) as exc:
        print(f"jobtrail import: {exc}", file=sys.stderr)
        print(f"jobtrail import: {_so_far(importer.done, None)}", file=sys.stderr)
        return 1
    finally:
        log.close()
    done = importer.done
    print(
        f"jobtrail import: {done.events} events of {done.streams} streams imported into "
        f"{settings.data} in {done.appends} appends (positions 1-{done.position})"
    )
    return 0


def _so_far(done: Imported, line: int | None) -> str:
    if done.events == 0:
        return "nothing was imported"
    rest = f"; nothing from line {line} on" if line is not None else ""
    return (
        f"{done.events} events before it were imported (positions 1-{done.position}) "
        f"and are valid{rest}"
    )


def _settings(args: argparse.Namespace) -> ImportSettings:
    file = None if args.file == "-" else Path(args.file)
    if file is not None and (not file.exists() or file.is_dir()):
        raise UsageError(f"{file} does not exist or is a directory")
    data = Path(args.data)
    if data.exists() and not data.is_dir():
        raise UsageError(f"{data} is not a directory")
    return ImportSettings(data, file)


class _NotEmpty(Exception):
    """The target data directory holds events already."""


def _open_empty(data: Path, clock: SetClock) -> FileLog:
    """The data directory's log, created if missing; raises _NotEmpty if it holds events.

    Appends are not synced one by one: `FileLog.close` syncs everything and records a
    checkpoint, so the import is durable when it ends (and an import cut short by a
    machine crash is started again into an empty directory anyway).
    """
    log = FileLog(data, create=True, clock=clock, fsync=_sync_at_close)
    try:
        if log.head() > 0:
            raise _NotEmpty(
                f"{data} holds events already (up to position {log.head()}); "
                "import only into an empty data directory"
            )
    except BaseException:
        log.close()
        raise
    return log


@contextmanager
def _source(file: Path | None) -> Iterator[tuple[Iterable[bytes], int | None]]:
    """The export's lines (bytes, newline kept) and its size in bytes when known."""
    if file is None:
        yield sys.stdin.buffer, None
        return
    with file.open("rb") as stream:
        info = os.fstat(stream.fileno())
        yield stream, info.st_size if stat.S_ISREG(info.st_mode) else None


def _sync_at_close(fd: int) -> None:
    """The import's fsync: nothing now; `FileLog.close` syncs the whole directory."""


# -- lines -----------------------------------------------------------------------------


class Line(msgspec.Struct, frozen=True):
    """A checked line: where it is in the file, its envelope and its event."""

    number: int
    size: int
    envelope: ExportedEvent
    event: NewEvent


def parse_line(number: int, raw: bytes) -> Line:
    """Check one line of an export; raise BadLine saying what is wrong with it."""
    try:
        e = _LINE.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError included: the message names the field
        raise BadLine(number, f"not an exported event: {exc}") from None
    try:
        streams.parse(e.stream)
    except InvalidId as exc:
        raise BadLine(number, f"`stream`: {exc}") from None
    if e.job_id != streams.job_id_of(e.stream):
        raise BadLine(number, f"`job_id` {e.job_id!r} does not match stream {e.stream!r}")
    decoder = _DECODERS.get(e.type)
    if decoder is None:
        raise BadLine(number, f"unknown event type {e.type[:40]!r}")
    try:
        unknown = set(_KEYS.decode(e.data)) - _FIELDS[e.type]
        event = decoder.decode(e.data)
    except msgspec.DecodeError as exc:
        raise BadLine(number, f"`data` is not a {e.type!r} event: {exc}") from None
    if unknown:
        raise BadLine(number, f"`data` of a {e.type!r} event has unknown fields {sorted(unknown)}")
    return Line(number, len(raw), e, NewEvent(event=event, id=e.id))  # type: ignore[arg-type]


def read_lines(lines: Iterable[bytes]) -> Iterator[Line]:
    """The checked lines of an export, blank lines skipped."""
    for number, raw in enumerate(lines, 1):
        if raw.strip():
            yield parse_line(number, raw)


# -- appending -------------------------------------------------------------------------


class _Group:
    """Lines that were one commit: one time, consecutive positions, each stream in one run.

    A stream that comes back after another one could not have been one append (an append
    numbers its streams one after another), so it begins the next group.
    """

    def __init__(self, first: Line) -> None:
        self.lines = [first]
        self.runs: list[list[Line]] = [[first]]
        self.streams = {first.envelope.stream}
        self.size = first.size

    def accepts(self, line: Line) -> bool:
        last = self.lines[-1].envelope
        e = line.envelope
        if e.recorded_at != last.recorded_at or e.position != last.position + 1:
            return False
        if self.size + line.size > MAX_PAYLOAD // 2:  # a record's limit, with room
            return False
        if e.stream == last.stream:
            return e.version == last.version + 1
        return e.stream not in self.streams

    def add(self, line: Line) -> None:
        if line.envelope.stream == self.lines[-1].envelope.stream:
            self.runs[-1].append(line)
        else:
            self.runs.append([line])
            self.streams.add(line.envelope.stream)
        self.lines.append(line)
        self.size += line.size

    def batch(self) -> list[AppendTo]:
        return [
            AppendTo(
                run[0].envelope.stream, [line.event for line in run], run[0].envelope.version - 1
            )
            for run in self.runs
        ]

    def first_of(self, stream: str) -> Line:
        return next(run[0] for run in self.runs if run[0].envelope.stream == stream)


class Importer:
    """Appends checked lines group by group, each at its recorded time and version."""

    def __init__(self, log: FileLog, clock: SetClock) -> None:
        self.log = log
        self.done = Imported()
        self._clock = clock  # the log's clock
        self._last_position = 0  # in the file

    def run(self, lines: Iterable[bytes], bar: Bar | None = None) -> Imported:
        group: _Group | None = None
        consumed = 0
        for line in read_lines(lines):
            position = line.envelope.position
            if position <= self._last_position:
                raise BadLine(
                    line.number,
                    f"position {position} does not follow {self._last_position}: lines are "
                    "out of the feed's order, or repeated",
                )
            self._last_position = position
            if group is not None and group.accepts(line):
                group.add(line)
            else:
                if group is not None:
                    self._append(group)
                group = _Group(line)
            consumed += line.size
            if bar is not None and not line.number % PROGRESS_EVERY:
                bar.update(consumed)
        if group is not None:
            self._append(group)
        return self.done

    def _append(self, group: _Group) -> None:
        self._clock.now = group.lines[0].envelope.recorded_at
        try:
            recorded = self.log.append_many(group.batch())
        except WrongExpectedVersion as exc:
            line = group.first_of(exc.stream)
            why = "an event before it is missing" if exc.actual < exc.expected else "repeated"
            raise BadLine(
                line.number,
                f"stream {exc.stream} is at version {exc.actual} here, but this event is "
                f"its version {line.envelope.version}: {why}",
            ) from None
        except StorageError:
            raise
        except JobtrailError as exc:
            raise BadLine(group.lines[0].number, str(exc)) from None
        events = [e for part in recorded for e in part]
        for line, e in zip(group.lines, events, strict=True):
            if e.position != self.done.position + 1:  # the store already had this event
                raise BadLine(
                    line.number,
                    f"event {line.envelope.id} of stream {line.envelope.stream} is imported "
                    "already: a repeated event",
                )
            self.done.position = e.position
            self.done.events += 1
            self.done.streams += e.version == 1
        self.done.appends += 1
