"""`jobtrail export`: the store's events as NDJSON, one a line, in the feed's order.

A line is the API's event JSON (`service.events_api.event_json`) plus the event's
`stream`, with its times at full precision, so that `jobtrail import` rebuilds the same
store. The feed is read read-only and lock-free, one record at a time (constant memory),
up to the position its mark had when the export began: beside live appenders the output
is a consistent prefix of the store, never part of an append.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import msgspec
from msgspec.structs import asdict

from eventstore import streams
from eventstore.errors import InvalidId, StorageError
from eventstore.events import JobRequested
from eventstore.filelog import FileLog
from eventstore.layout import NotADataDirectory
from eventstore.records import RecordedEvent
from service.operator import command_parser
from service.operator.feedscan import Bar, head_hint, open_feed, scan_feed

DESCRIPTION = """\
Writes the events of the data directory as NDJSON, one event a line, in the order of the
global feed: the API's event JSON {"id", "job_id", "version", "position", "type",
"recorded_at", "data"} plus "stream", the stream the event belongs to. Every stream is
exported (jobs, leads, usage, site settings, idempotency keys; "job_id" is null outside
job streams), and times keep their microseconds, so `jobtrail import` of a whole export
into an empty data directory rebuilds the same projections.

Read-only and lock-free: safe beside running serve and worker processes. The export
stops at the feed's end as it was when it began, so it is a consistent prefix of the
store (no append is ever cut in two). Memory stays constant whatever the store's size;
with a terminal on standard error, a progress bar goes there. Document contents (the
blobs directory) are not part of the export: copy DATA/blobs beside it.

Filters combine. With --site, a job belongs to the site named in its `requested`
event; the ids of that site's jobs are remembered while the feed is read once (memory
grows with the number of the site's jobs, not with events). A filtered export imports
into an empty directory only if it holds whole streams (--site, --job); positions are
then numbered afresh, in the same order.
"""

EPILOG = """\
exit status:
  0  the events were written
  1  the feed is damaged (the events before the damage were written), the output
     cannot be written, or --job names no job (of --site)
  2  bad usage, or DATA is missing or not a jobtrail data directory
"""

_ENCODER: Final = msgspec.json.Encoder()


class UsageError(ValueError):
    """A flag that cannot be used (exit 2)."""


class ExportSettings(msgspec.Struct, frozen=True, kw_only=True):
    data: Path
    output: Path | None = None  # None: standard output
    site: str | None = None
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before
    job: str | None = None


class Exported(msgspec.Struct):
    """How an export went."""

    events: int = 0
    position: int = 0  # the last feed position read
    damage: str | None = None
    job_found: bool = True  # with --job: the job exists (and is of --site)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "export",
        summary="write the events as NDJSON, one a line (for backups, audits and import)",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write to FILE (replaced if it exists) instead of standard output",
    )
    p.add_argument(
        "--site",
        help="only the streams of this site: its jobs, leads, usage, settings and idempotency keys",
    )
    p.add_argument(
        "--since",
        metavar="TIME",
        help="only events recorded at or after TIME: RFC 3339 (2026-11-22T10:00:00Z; UTC "
        "when it has no offset) or a date YYYY-MM-DD (its start, UTC)",
    )
    p.add_argument(
        "--until",
        metavar="TIME",
        help="only events recorded before TIME (same forms as --since)",
    )
    p.add_argument("--job", metavar="ID", help="only the events of this job (a UUID)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except (UsageError, InvalidId) as exc:
        print(f"jobtrail export: {exc}", file=sys.stderr)
        return 2
    try:
        log = open_feed(settings.data)
    except NotADataDirectory as exc:
        print(f"jobtrail export: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"jobtrail export: {exc}", file=sys.stderr)
        return 1
    with closing(log):
        try:
            if settings.output is None:
                result = _export_to(log, settings, sys.stdout.buffer)
            else:
                with settings.output.open("wb") as out:
                    result = _export_to(log, settings, out)
        except BrokenPipeError:
            _silence_stdout()
            print("jobtrail export: the output was closed early", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"jobtrail export: cannot write the output: {exc}", file=sys.stderr)
            return 1
    if not result.job_found and result.damage is None:
        scope = f" in site {settings.site}" if settings.site else ""
        print(f"jobtrail export: no such job {settings.job}{scope}", file=sys.stderr)
        return 1
    print(
        f"jobtrail export: {result.events} events written (feed read up to position "
        f"{result.position})",
        file=sys.stderr,
    )
    if result.damage is not None:
        print(f"jobtrail export: stopped at damage: {result.damage}", file=sys.stderr)
        return 1
    return 0


def _silence_stdout() -> None:
    """After a closed pipe, let the interpreter's final flush of stdout fail quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _settings(args: argparse.Namespace) -> ExportSettings:
    since = parse_time(args.since, "--since") if args.since is not None else None
    until = parse_time(args.until, "--until") if args.until is not None else None
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be before --until")
    return ExportSettings(
        data=Path(args.data),
        output=Path(args.output) if args.output is not None else None,
        site=streams.valid_id(args.site, "site id") if args.site is not None else None,
        since=since,
        until=until,
        job=streams.valid_job_id(args.job) if args.job is not None else None,
    )


def parse_time(value: str, flag: str) -> datetime:
    """An RFC 3339 time (UTC when it names no offset) or a date YYYY-MM-DD (00:00 UTC)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{flag} {value!r} is neither an RFC 3339 time nor a date YYYY-MM-DD"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# -- the line format ----------------------------------------------------------------------


def export_json(recorded: RecordedEvent) -> dict[str, Any]:
    """One exported event: the API's event JSON, its stream, and times to the microsecond.

    The API shows milliseconds; an export keeps what is stored (msgspec encodes a
    datetime as RFC 3339 with its microseconds), so an import folds to equal projections.
    Built here with the keys of `service.events_api.event_json` rather than from it: that
    formats every time to milliseconds, which the export would only overwrite again.
    """
    return {
        "id": recorded.id,
        "job_id": streams.job_id_of(recorded.stream),
        "version": recorded.version,
        "position": recorded.position,
        "type": recorded.type,
        "recorded_at": recorded.recorded_at,
        "data": asdict(recorded.event),
        "stream": recorded.stream,
    }


def export_line(recorded: RecordedEvent) -> bytes:
    """An exported event as one NDJSON line (JSON never holds a raw newline)."""
    return _ENCODER.encode(export_json(recorded)) + b"\n"


# -- the export -------------------------------------------------------------------------


class EventFilter:
    """Which events an export keeps; remembers the ids of `site`'s jobs as it goes."""

    def __init__(self, settings: ExportSettings) -> None:
        self._site = settings.site
        self._since = settings.since
        self._until = settings.until
        self._site_jobs: set[str] = set()

    def keep(self, recorded: RecordedEvent) -> bool:
        if self._site is not None and not self._of_site(recorded):
            return False
        at = recorded.recorded_at
        if self._since is not None and at < self._since:
            return False
        return self._until is None or at < self._until

    def _of_site(self, recorded: RecordedEvent) -> bool:
        job_id = streams.job_id_of(recorded.stream)
        if job_id is None:
            return streams.parse(recorded.stream).parts[0] == self._site
        event = recorded.event
        if isinstance(event, JobRequested) and recorded.version == 1:
            if event.site_id != self._site:
                return False
            self._site_jobs.add(job_id)
            return True
        return job_id in self._site_jobs


def export(
    log: FileLog, settings: ExportSettings, write: Callable[[bytes], object], bar: Bar | None
) -> Exported:
    """Write the chosen events, one line each, in the feed's order."""
    keep = EventFilter(settings).keep
    result = Exported()
    if settings.job is not None:
        try:
            events = log.read_stream(streams.job(settings.job))  # one job: its own log
        except (OSError, msgspec.DecodeError) as exc:
            result.damage = f"the job's stream cannot be read: {exc}"
            return result
        first = events[0].event if events else None
        result.job_found = isinstance(first, JobRequested) and (
            settings.site is None or first.site_id == settings.site
        )
        if result.job_found:
            _write_lines((e for e in events if keep(e)), write, result)
        result.position = max((e.position for e in events), default=0)
        return result

    def on_page(events: list[RecordedEvent]) -> None:
        _write_lines((e for e in events if keep(e)), write, result)

    until = head_hint(log)  # the end of the feed now: later appends are not exported
    scan = scan_feed(log, on_page, until=until, bar=bar)
    result.position = scan.position
    result.damage = scan.damage
    return result


def _write_lines(
    events: Iterable[RecordedEvent], write: Callable[[bytes], object], into: Exported
) -> None:
    lines = [export_line(e) for e in events]
    if lines:
        write(b"".join(lines))
        into.events += len(lines)


def _export_to(log: FileLog, settings: ExportSettings, out: IO[bytes]) -> Exported:
    with Bar("exporting events", head_hint(log)) as bar:
        result = export(log, settings, out.write, bar)
    out.flush()
    return result
