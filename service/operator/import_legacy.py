"""`jobtrail import-legacy DIR --site SITE`: the older file-backed job store as jobtrail jobs.

Each legacy job becomes a `job:<id>` stream of type `legacy` whose events are recorded
at the old store's own times (the store's clock is set to them, as `jobtrail import`
does), so the job's `created_at`, `updated_at` and its audit timeline say what the old
store said. Every event id is fixed by the job id, and every append names the version it
expects, so a second run, or a run beside another one, appends nothing twice; a run
killed between the two appends of one job is finished by the next run.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import msgspec

from eventstore import streams
from eventstore.clock import SetClock
from eventstore.errors import InvalidId, JobtrailError, StorageError, WrongExpectedVersion
from eventstore.events import JobPruned, JobRequested
from eventstore.filelog import FileLog
from eventstore.layout import Layout, NotADataDirectory
from eventstore.records import AppendTo, RecordedEvent
from projections.jobs import JobView, apply_job
from service.operator import command_parser
from service.operator.feedscan import Bar
from service.operator.legacy_history import FAILED, JOB_TYPE, UNFINISHED, Part, history
from service.operator.legacy_records import (
    MAX_RECORD_BYTES,
    Ignored,
    LegacyDirectory,
    LegacyJob,
    Skipped,
)

DESCRIPTION = f"""\
Imports the older file-backed job store in DIR: `{{job_id}}.json` files (one JSON object)
and `{{job_id}}/events.log` directories (one JSON object a line, merged in order: the last
line wins). A record has a `status` (queued, running, completed or failed) and may have
`created_at`, `updated_at` (ISO 8601, UTC when no offset is given; the file's time when
missing), `progress` (0-100), `result` and `error_message`.

Each job keeps its id, times, progress, result and error message and becomes a job of
type `{JOB_TYPE}` of --site, created by --user: the site's admins see it on
GET /api/jobs/{{id}}, and GET /api/job-status/{{id}} answers as the old service did. No
worker runs a `{JOB_TYPE}` job, and none can be retried. A failed job gets the error code
`{FAILED}`; a job that was still queued or running is imported as failed with
`{UNFINISHED}`. A failed job's `result`, which jobtrail jobs do not have, is kept in its
metadata as `legacy_result`.

Running it again imports nothing new: a job already in the store is counted as already
present, whatever its legacy record says now; so is one that `jobtrail prune` removed
since (its tombstone in the site is found). A record that cannot be imported is
skipped with the reason (malformed JSON, a wrong type, an unknown status, a name that
is not a UUID, a symbolic link, a file over {MAX_RECORD_BYTES} bytes, a job stored in
both forms) and the others are imported. Other files in DIR are listed as ignored.

Safe beside running serve and worker processes on DATA. With a terminal on standard
error, a progress bar goes there; the summary goes to standard output.
"""

EPILOG = """\
exit status:
  0  every legacy job is in the store (imported now or already present)
  1  a record was skipped (the others were imported), or the store cannot be written
  2  bad usage: DIR is missing or not a directory, a malformed --site or --user, or DATA
     is missing or not a jobtrail data directory
"""

SHOWN_SKIPS: Final = 200
"""Skipped entries listed one by one in the summary; the rest are counted."""

Outcome = Literal["imported", "present", "pruned"]


class UsageError(ValueError):
    """A flag or argument that cannot be used (exit 2)."""


class LegacySettings(msgspec.Struct, frozen=True, kw_only=True):
    source: Path
    data: Path
    site: str
    user: str


class Summary(msgspec.Struct):
    """What a run did, for the report at its end."""

    imported: int = 0
    present: int = 0
    pruned: int = 0  # of the present ones: imported before, then removed by `jobtrail prune`
    skipped: list[Skipped] = []
    ignored: list[Ignored] = []
    statuses: dict[str, int] = {}

    def count(self, job: LegacyJob, outcome: Outcome) -> None:
        if outcome == "imported":
            self.imported += 1
            self.statuses[job.status] = self.statuses.get(job.status, 0) + 1
        else:
            self.present += 1
            self.pruned += outcome == "pruned"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "import-legacy",
        summary="import the older file-backed job store as jobs of type legacy",
        description=DESCRIPTION,
        epilog=EPILOG,
        data_help="the data directory to import into (JOBTRAIL_DATA, ./jobtrail-data)",
    )
    p.add_argument("source", metavar="DIR", help="the older job store's directory")
    p.add_argument(
        "--site", required=True, help="the site the jobs belong to (1-64 of A-Za-z0-9_-)"
    )
    p.add_argument(
        "--user",
        default="legacy",
        help="the user recorded as the jobs' creator (default: legacy); members see only "
        "their own jobs, admins every job of the site",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        Layout(settings.data).require()
    except (UsageError, InvalidId, NotADataDirectory) as exc:
        print(f"jobtrail import-legacy: {exc}", file=sys.stderr)
        return 2
    clock = SetClock()
    try:
        source = LegacyDirectory(settings.source, lambda: datetime.now(UTC))
    except OSError as exc:
        print(f"jobtrail import-legacy: cannot read {settings.source}: {exc}", file=sys.stderr)
        return 1
    summary = Summary()
    try:
        with closing(source), closing(FileLog(settings.data, create=False, clock=clock)) as log:
            LegacyImporter(log, clock, settings).run(source, summary)
    except (StorageError, OSError) as exc:
        _report(summary, settings)
        print(f"jobtrail import-legacy: the store cannot be written: {exc}", file=sys.stderr)
        return 1
    _report(summary, settings)
    return 1 if summary.skipped else 0


def _settings(args: argparse.Namespace) -> LegacySettings:
    source = Path(args.source)
    if not source.is_dir():
        what = "is not a directory" if source.exists() else "does not exist"
        raise UsageError(f"DIR {source} {what}")
    return LegacySettings(
        source=source,
        data=Path(args.data),
        site=streams.valid_id(args.site, "--site"),
        user=streams.valid_id(args.user, "--user"),
    )


def _report(summary: Summary, settings: LegacySettings) -> None:
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items()))
    print(
        f"jobtrail import-legacy: {summary.imported} jobs imported"
        f"{f' ({by_status})' if by_status else ''}, {summary.present} already present"
        f"{f' ({summary.pruned} pruned since)' if summary.pruned else ''}, "
        f"{len(summary.skipped)} skipped, {len(summary.ignored)} ignored "
        f"(site {settings.site}, from {settings.source})"
    )
    for skipped in summary.skipped[:SHOWN_SKIPS]:
        print(f"  skipped {skipped.entry}: {skipped.reason}")
    if len(summary.skipped) > SHOWN_SKIPS:
        print(f"  ... and {len(summary.skipped) - SHOWN_SKIPS} more skipped")
    for ignored in summary.ignored[:SHOWN_SKIPS]:
        print(f"  ignored {ignored.entry}: not a legacy job record")


class LegacyImporter:
    """Appends each legacy job's history, or finds it there already."""

    def __init__(self, log: FileLog, clock: SetClock, settings: LegacySettings) -> None:
        self.log = log
        self._clock = clock
        self.site = settings.site
        self.user = settings.user
        # A pruned job's stream reads as empty; its tombstone says it was here (not again).
        self._pruned = frozenset(
            e.event.job_id
            for e in log.read_stream(streams.pruned(settings.site))
            if isinstance(e.event, JobPruned)
        )

    def run(self, source: LegacyDirectory, summary: Summary) -> None:
        groups = list(source.groups())
        with Bar("importing legacy jobs", len(groups)) as bar:
            for done, group in enumerate(groups, 1):
                if isinstance(group, Ignored):
                    summary.ignored.append(group)
                elif isinstance(group, Skipped):
                    summary.skipped.append(group)
                else:
                    job = source.read(group)
                    if isinstance(job, Skipped):
                        summary.skipped.append(job)
                    else:
                        self._one(job, summary)
                bar.update(done)

    def _one(self, job: LegacyJob, summary: Summary) -> None:
        try:
            outcome = self.store(job)
        except _NotOurs as exc:
            summary.skipped.append(Skipped(job.entry, str(exc)))
        else:
            summary.count(job, outcome)

    def store(self, job: LegacyJob) -> Outcome:
        """Append what of the job's history the store lacks; raises _NotOurs if it differs."""
        parts = history(job, self.site, self.user)
        stream = streams.job(job.job_id)
        for _ in range(3):  # a concurrent import of the same job: look again
            existing = self.log.read_stream(stream)
            if not existing and job.job_id in self._pruned:
                return "pruned"
            todo = self._remaining(parts, existing)
            if not todo:
                return "present"
            version = len(existing)
            try:
                for part in todo:
                    self._clock.now = part.at
                    self.log.append_many([AppendTo(stream, part.events, version)])
                    version += len(part.events)
            except WrongExpectedVersion:
                continue
            except StorageError:
                raise
            except JobtrailError as exc:
                raise _NotOurs(f"cannot be appended: {exc}") from None
            return "imported"
        raise _NotOurs("the job's stream kept changing while it was imported")

    def _remaining(self, parts: list[Part], existing: list[RecordedEvent]) -> list[Part]:
        """The parts still to append: all for a new job, none for one imported before."""
        if not existing:
            return parts
        first = existing[0]
        if first.id != parts[0].events[0].id:
            raise _NotOurs("a job with this id is in the store already (not from this import)")
        if isinstance(first.event, JobRequested) and first.event.site_id != self.site:
            raise _NotOurs(f"imported already, into site {first.event.site_id}")
        view: JobView | None = None
        for recorded in existing:
            view = apply_job(view, recorded)
        if view is not None and view.is_final:
            return []
        # An import cut short between its parts: finish it if the stream ends at a part.
        ids = [e.id for e in existing]
        for i in range(1, len(parts)):
            if ids == [e.id for p in parts[:i] for e in p.events]:
                return parts[i:]
        raise _NotOurs("partly imported before, from a record that has changed since")


class _NotOurs(Exception):
    """The job's stream holds something this import did not write (the job is skipped)."""
