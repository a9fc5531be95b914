"""`jobtrail prune`: retention of finished jobs, and the hourly prune of `up` and `worker`.

A finished job (completed, failed, cancelled) whose last event is older than the cut-off
is removed with `EventStore.prune`: a `job_pruned` tombstone in `pruned:<site>`, its
stream log deleted, its events taken out of the feed (docs/storage.md, "Retention").
Usage, lead and site streams are never pruned, so monthly totals stay as they were.
Each job is re-read from its own stream and pruned at the version read, so a job that
moved on meanwhile (a manual retry) is a conflict and stays.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import anyio
import msgspec
from rich.console import Console
from rich.table import Table

from eventstore import (
    AppendTo,
    EventStore,
    InvalidId,
    StorageError,
    WrongExpectedVersion,
    new,
    streams,
)
from eventstore.clock import utcnow
from eventstore.events import JobPruned, JobRequested
from eventstore.filestore import open_file_store
from eventstore.layout import Layout, NotADataDirectory
from eventstore.records import RecordedEvent
from eventstore.streams import job as job_stream
from eventstore.streams import pruned as pruned_stream
from eventstore.streams import valid_id
from projections.jobs import FINAL, JobTable, JobView, apply_job
from projections.leads import EVALUATION_JOB_TYPE, lead_of_job
from service.operator import command_parser

log = logging.getLogger("jobtrail.prune")

BATCH: Final = 100  # jobs per prune: one record, one lock hold
CONFLICT_TRIES: Final = 3
PRUNE_EVERY: Final = 3600.0

DESCRIPTION = """\
Removes the finished jobs (completed, failed, cancelled) whose last event is older than
--older-than: their logs are deleted and their events taken out of the feed, so the space
is reclaimed. Each leaves a tombstone, so the API answers 410 Gone for it (404 on
/api/job-status). Monthly usage, leads and site settings are kept. Safe beside running
serve and worker processes; a job that changes while it is pruned is left alone.
"""

EPILOG = """\
exit status:
  0  done (or, with --dry-run, listed); also when nothing was old enough
  1  the store could not be read or written, or is damaged
  2  bad usage, or DATA is missing or not a jobtrail data directory
"""


class PruneSettings(msgspec.Struct, frozen=True):
    data: Path
    older_than: timedelta
    dry_run: bool = False
    site: str | None = None


class SiteTotal(msgspec.Struct):
    jobs: int = 0
    events: int = 0
    oldest: datetime | None = None


class PruneResult(msgspec.Struct):
    """What a prune removed (or would remove), per site; jobs that changed meanwhile."""

    cutoff: datetime
    sites: dict[str, SiteTotal] = {}
    skipped: int = 0

    @property
    def jobs(self) -> int:
        return sum(t.jobs for t in self.sites.values())

    @property
    def events(self) -> int:
        return sum(t.events for t in self.sites.values())


class UsageError(ValueError):
    """A flag that cannot be used (exit 2)."""


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `3600s` or `2w` as a timedelta (0 is allowed: every finished job)."""
    text = text.strip()
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit():
        raise UsageError(f"--older-than must be like 90d, 12h, 30m, 3600s or 2w, not {text!r}")
    return timedelta(seconds=int(number) * _UNITS[unit])


# -- the library: finding and pruning --------------------------------------------------


async def finished_before(
    store: EventStore, cutoff: datetime, site: str | None = None
) -> list[JobView]:
    """Finished jobs whose last event is before `cutoff`, oldest first (a fold of the feed).

    A lead's latest evaluation job is kept while an older job of that lead is still there:
    the live lead view forgets a pruned latest job (`last_job_id` becomes None), and a
    rebuild without its events must find no other job of the lead to name instead
    (DESIGN.md invariant 8). The older ones go first; the latest goes in a later round.
    """
    jobs = JobTable()
    of_lead: dict[tuple[str, str], list[str]] = {}  # (site, lead) -> its jobs still there
    position = 0
    while events := await store.read_all(position + 1, 1000):
        for e in events:
            jobs.apply(e)
            event = e.event
            if isinstance(event, JobRequested) and (lead := lead_of_job(event)):
                job_id = streams.job_id_of(e.stream)
                if job_id is not None:
                    of_lead.setdefault(lead, []).append(job_id)
            elif isinstance(event, JobPruned) and event.lead_id is not None:
                left = of_lead.get((event.site_id, event.lead_id), [])
                if event.job_id in left:
                    left.remove(event.job_id)
        position = events[-1].position
    kept = {ids[-1] for ids in of_lead.values() if len(ids) > 1}
    found = [
        v
        for v in jobs
        if v.status in FINAL
        and v.updated_at < cutoff
        and (site is None or v.site_id == site)
        and v.job_id not in kept
    ]
    return sorted(found, key=lambda v: v.updated_at)


async def prune_finished(
    store: EventStore,
    cutoff: datetime,
    *,
    site: str | None = None,
    dry_run: bool = False,
    on_batch: Callable[[int], object] | None = None,
) -> PruneResult:
    """Prune (or, `dry_run`, only count) the finished jobs older than `cutoff`."""
    result = PruneResult(cutoff=cutoff, sites={})
    candidates = await finished_before(store, cutoff, site)
    for start in range(0, len(candidates), BATCH):
        ids = [v.job_id for v in candidates[start : start + BATCH]]
        await _prune_batch(store, ids, cutoff, result, dry_run)
        if on_batch is not None:
            on_batch(min(start + BATCH, len(candidates)))
    if not dry_run and candidates:
        # Every batch's tombstones first, then each segment rewritten once. Stopped before
        # this (an error, a shutdown), the next prune or `compact` finishes it.
        await store.compact()
    return result


async def _prune_batch(
    store: EventStore, ids: list[str], cutoff: datetime, result: PruneResult, dry_run: bool
) -> None:
    for _ in range(CONFLICT_TRIES):
        current = [await _current(store, job_id, cutoff) for job_id in ids]
        ready = [c for c in current if c is not None]
        if not ready:
            result.skipped += len(ids)
            return
        if not dry_run:
            try:
                await store.prune_deferred(_prune_append(ready))
            except WrongExpectedVersion:
                continue  # one of them moved on: read them again
        result.skipped += len(ids) - len(ready)
        for view, events in ready:
            total = result.sites.setdefault(view.site_id, SiteTotal())
            total.jobs += 1
            total.events += len(events)
            at = events[-1].recorded_at
            total.oldest = at if total.oldest is None or at < total.oldest else total.oldest
        return
    result.skipped += len(ids)


async def _current(
    store: EventStore, job_id: str, cutoff: datetime
) -> tuple[JobView, list[RecordedEvent]] | None:
    """The job as its stream tells it now, if it is still finished and old enough."""
    events = await store.read_stream(job_stream(job_id))
    view: JobView | None = None
    for e in events:
        view = apply_job(view, e)
    if view is None or view.status not in FINAL or events[-1].recorded_at >= cutoff:
        return None
    return view, events


def _prune_append(ready: list[tuple[JobView, list[RecordedEvent]]]) -> list[AppendTo]:
    tombstones: dict[str, list[JobPruned]] = {}
    checks = []
    for view, events in ready:
        lead = view.metadata.get("lead_id") if view.job_type == EVALUATION_JOB_TYPE else None
        tombstones.setdefault(view.site_id, []).append(
            JobPruned(
                job_id=view.job_id,
                site_id=view.site_id,
                user_id=view.user_id,
                job_type=view.job_type,
                status=view.status,
                finished_at=events[-1].recorded_at,
                last_version=events[-1].version,
                created_position=view.created_position,
                lead_id=lead if isinstance(lead, str) else None,
            )
        )
        checks.append(AppendTo(job_stream(view.job_id), [], events[-1].version))
    appends = [
        AppendTo(pruned_stream(site), [new(t) for t in stones], -1)
        for site, stones in tombstones.items()
    ]
    return appends + checks


async def prune_periodically(
    store: EventStore,
    retention: timedelta,
    *,
    every: float = PRUNE_EVERY,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """`JOBTRAIL_RETENTION`: prune now and then every `every` seconds, until cancelled."""
    while True:
        try:
            result = await prune_finished(store, clock() - retention)
            if result.jobs:
                log.info("pruned %d finished jobs (%d events)", result.jobs, result.events)
        except Exception:  # the next round tries again; serving goes on, whatever it was
            log.exception("retention prune failed")
        await anyio.sleep(every)


# -- the command -------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "prune",
        summary="remove finished jobs older than a cut-off, leaving a tombstone (410 Gone)",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="prune jobs whose last event is older than AGE: a whole number and a unit, "
        "s, m, h, d or w (90d; 0d prunes every finished job)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="only report what would be pruned; nothing in DATA changes",
    )
    p.add_argument("--site", help="only the jobs of this site")


def run(args: argparse.Namespace) -> int:
    try:
        settings = PruneSettings(
            data=Path(args.data),
            older_than=parse_age(args.older_than),
            dry_run=args.dry_run,
            site=valid_id(args.site, "site id") if args.site is not None else None,
        )
        Layout(settings.data).require()
    except (UsageError, InvalidId, NotADataDirectory) as exc:
        print(f"jobtrail prune: {exc}", file=sys.stderr)
        return 2
    try:
        result = anyio.run(_run, settings)
    except StorageError as exc:
        print(f"jobtrail prune: {exc}", file=sys.stderr)
        return 1
    _print(result, settings)
    return 0


async def _run(settings: PruneSettings) -> PruneResult:
    cutoff = utcnow() - settings.older_than
    # A dry run opens the store read-only: no recovery, no checkpoint, not a byte written.
    async with open_file_store(
        settings.data, create=False, readonly=settings.dry_run, watch=False
    ) as store:
        return await prune_finished(store, cutoff, site=settings.site, dry_run=settings.dry_run)


def _print(result: PruneResult, settings: PruneSettings) -> None:
    console = Console(highlight=False)
    verb = "would prune" if settings.dry_run else "pruned"
    cutoff = result.cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    if result.sites:
        table = Table(title=f"finished jobs whose last event is before {cutoff}")
        table.add_column("site")
        table.add_column("jobs", justify="right")
        table.add_column("events", justify="right")
        table.add_column("oldest", justify="left")
        for site, total in sorted(result.sites.items()):
            oldest = total.oldest.strftime("%Y-%m-%dT%H:%M:%SZ") if total.oldest else "-"
            table.add_row(site, str(total.jobs), str(total.events), oldest)
        console.print(table)
    console.print(
        f"{verb} {result.jobs} jobs ({result.events} events) finished before {cutoff}"
        + (f"; {result.skipped} changed meanwhile and were kept" if result.skipped else "")
    )
