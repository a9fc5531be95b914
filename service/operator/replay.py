"""`jobtrail replay`: rebuild every projection from the events and compare it with the live one.

The live projections are the read model's checkpoint that serve processes save (every
`checkpoint_seconds` and at shutdown; `service.app.checkpoint_path`): replay folds the feed
up to the checkpoint's position and compares each projection's state with the saved one
(DESIGN.md invariant 8). With `--as-of` it prints one job, a site's usage or a listing as
it was at a past position or time instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, get_args

import msgspec

from eventstore import streams
from eventstore.errors import InvalidId, StorageError
from eventstore.filelog import FileLog
from eventstore.layout import NotADataDirectory
from projections.checkpoint import FORMAT, Checkpoint, CheckpointUnreadable, read_checkpoint
from projections.job_rebuild import JobRebuild
from projections.jobs import JobStatus
from projections.model import READ_MODEL_CHECKPOINT, ReadModel
from projections.runner import Projection
from service.operator import command_parser
from service.operator.feedscan import (
    Bar,
    Folded,
    Partner,
    Scan,
    cpu_to_spare,
    fold_part,
    folder,
    head_hint,
    open_feed,
    scan_feed,
    worth_parallel,
)
from service.operator.statediff import ProjectionDiff, compare, describe, entities
from service.views import job_json

DESCRIPTION = """\
Rebuilds every projection (jobs, listings, usage, leads) from the feed and compares it
with the live projections: the checkpoint that serve processes save in
DATA/projections/read-model.ckpt every minute and at shutdown. The rebuild stops at the
checkpoint's position, so the two are states of the same instant. Prints, per
projection, "same" or the entities that differ (a job's id and fields; at most 20 each).
Without a checkpoint it rebuilds everything and prints the counts.

With --as-of and one of --job, --usage or --listing it prints, as JSON, that job, that
usage or that listing as it was at a position of the feed, or at a time (the feed up to
the last event recorded at or before it). Without --as-of they show the feed's end.
Read-only: safe beside running serve and worker processes. With a terminal on standard
error, a progress bar goes there.
"""

EPILOG = """\
exit status:
  0  the rebuild equals the live projections (or there is no checkpoint to compare with);
     with --as-of, the state was printed
  1  a projection differs; the checkpoint cannot be read, is of another format or of
     another store; the feed is damaged before the point asked for; or, with --as-of,
     the job did not exist then
  2  bad usage, or DATA is missing or not a jobtrail data directory
"""

STATUSES: Final = frozenset(get_args(JobStatus))


class ReplaySettings(msgspec.Struct, frozen=True, kw_only=True):
    data: Path
    json: bool = False
    as_of: int | datetime | None = None
    job: str | None = None
    usage: tuple[str, str | None] | None = None
    listing: str | None = None
    statuses: tuple[str, ...] | None = None
    user: str | None = None
    job_type: str | None = None
    limit: int = 50
    parallel: bool | None = None  # None: decided by the feed's size


class UsageError(ValueError):
    """A flag that cannot be used (exit 2)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "replay",
        summary="rebuild the projections from the events and compare them with the live ones",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the comparison as one JSON object (--as-of always prints JSON)",
    )
    p.add_argument(
        "--as-of",
        metavar="POSITION|TIMESTAMP",
        help="a position of the feed (an integer), or an ISO 8601 time such as "
        "2026-11-23T12:00:00Z (UTC when it has no offset); needs --job, --usage or --listing",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--job", metavar="ID", help="print this job as GET /api/jobs/{id} shows it")
    what.add_argument(
        "--usage",
        metavar="SITE[:YYYY-MM]",
        help="print the site's usage of that month (default: the month of the point asked for)",
    )
    what.add_argument(
        "--listing", metavar="SITE", help="print the site's job listing, newest first"
    )
    p.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help="with --listing: only jobs of this status (pending, running, completed, failed, "
        "cancelled; repeatable or comma separated)",
    )
    p.add_argument("--user", help="with --listing: only this user's jobs")
    p.add_argument("--type", dest="job_type", help="with --listing: only jobs of this type")
    p.add_argument(
        "--limit", type=int, default=50, help="with --listing: at most this many jobs (1-500)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except (UsageError, InvalidId) as exc:
        print(f"jobtrail replay: {exc}", file=sys.stderr)
        return 2
    try:
        log = open_feed(settings.data)
    except NotADataDirectory as exc:
        print(f"jobtrail replay: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"jobtrail replay: {exc}", file=sys.stderr)
        return 1
    try:
        if settings.job or settings.usage or settings.listing:
            return _as_of(log, settings)
        return _compare(log, settings)
    finally:
        log.close()


def _settings(args: argparse.Namespace) -> ReplaySettings:
    listing_flags = args.status or args.user or args.job_type or args.limit != 50
    if listing_flags and args.listing is None:
        raise UsageError("--status, --user, --type and --limit go with --listing")
    if args.as_of is not None and not (args.job or args.usage or args.listing):
        raise UsageError("--as-of needs one of --job, --usage or --listing")
    if not 1 <= args.limit <= 500:
        raise UsageError("--limit must be 1-500")
    usage = None
    if args.usage is not None:
        site, _, month = args.usage.partition(":")
        usage = (streams.valid_id(site, "site id"), streams.valid_month(month) if month else None)
    statuses = None
    if args.status:
        statuses = tuple(s for value in args.status for s in value.split(",") if s)
        if not set(statuses) <= STATUSES:
            raise UsageError(f"--status must be among {', '.join(sorted(STATUSES))}")
    return ReplaySettings(
        data=Path(args.data),
        json=bool(args.json),
        as_of=parse_as_of(args.as_of) if args.as_of is not None else None,
        job=streams.valid_job_id(args.job) if args.job is not None else None,
        usage=usage,
        listing=streams.valid_id(args.listing, "site id") if args.listing is not None else None,
        statuses=statuses,
        user=streams.valid_id(args.user, "user id") if args.user is not None else None,
        job_type=args.job_type,
        limit=args.limit,
    )


def parse_as_of(value: str) -> int | datetime:
    """A position (digits) or an ISO 8601 time, UTC when it names no offset."""
    if value.isdigit():
        return int(value)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--as-of {value!r} is neither a position nor an ISO 8601 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# -- rebuild and compare -------------------------------------------------------------


class Compared(msgspec.Struct, kw_only=True):
    """What `replay --json` prints."""

    same: bool
    checkpoint: Checkpoint | None
    position: int  # the last position folded into the rebuild
    events: int
    seconds: float
    projections: list[ProjectionDiff]  # empty without a checkpoint
    counts: dict[str, int]  # entries of each rebuilt projection
    problem: str | None = None  # why the comparison could not be made


def _compare(log: FileLog, settings: ReplaySettings) -> int:
    path = settings.data / "projections" / READ_MODEL_CHECKPOINT  # service.app.checkpoint_path
    live: ReadModel | None = None
    checkpoint: Checkpoint | None = None
    problem: str | None = None
    try:
        found = read_checkpoint(path)
    except (CheckpointUnreadable, OSError) as exc:
        found, problem = None, f"the live projections' checkpoint {path} cannot be read: {exc}"
    if found is not None:
        checkpoint, states = found
        live, problem = _load(checkpoint, states, path)
    until = checkpoint.position if checkpoint is not None else _head(log)
    started = time.perf_counter()
    with Bar("rebuilding projections", until) as bar:
        rebuilt = rebuild(log, until, parallel=settings.parallel, bar=bar)
    seconds = time.perf_counter() - started
    scan = rebuilt.scan
    if problem is None and scan.damage is not None:
        problem = f"the feed is damaged after position {scan.position}: {scan.damage}"
    if problem is None and checkpoint is not None:
        problem = _same_store(log, checkpoint, rebuilt.event_id)
    diffs = compare(live, rebuilt.model) if live is not None and problem is None else []
    same = problem is None and all(d.same for d in diffs)
    result = Compared(
        same=same,
        checkpoint=checkpoint,
        position=scan.position,
        events=scan.events,
        seconds=round(seconds, 3),
        projections=diffs,
        counts=_counts(rebuilt.model),
        problem=problem,
    )
    if settings.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        _print_compared(result, path)
    return 0 if same else 1


def _head(log: FileLog) -> int:
    """The feed's last position now; a rebuild without a checkpoint stops there."""
    hint = head_hint(log)
    return hint if hint is not None else log.head()


@dataclass(slots=True)
class Rebuilt:
    model: ReadModel
    scan: Scan
    event_id: str | None  # the id of the event at `until`, when the feed has one there
    processes: int = 1  # 2 when a second process folded listings and leads


def rebuild(
    log: FileLog | Path, until: int, *, parallel: bool | None = None, bar: Bar | None = None
) -> Rebuilt:
    """A read model folded from the feed's start through position `until`.

    Jobs are folded by `JobRebuild` (the job table's rules on mutable drafts, proven equal
    to the live fold by tests/projections/test_job_rebuild.py), 256 records per call.
    With `parallel` (by default: for a large feed, with a CPU to spare), a second process
    folds listings and leads while this one folds jobs and usage; both read the feed. Its
    listings come packed (`JobListings.pack`), each job id once.
    """
    if isinstance(log, Path):
        with closing(open_feed(log)) as opened:
            return rebuild(opened, until, parallel=parallel, bar=bar)
    model = ReadModel()
    if parallel is None:
        parallel = worth_parallel(log) and cpu_to_spare()
    jobs = JobRebuild()  # the job table's rules on drafts: no new view per event
    mine = tuple(jobs if p is model.jobs else p for p in model.projections)
    if parallel:
        mine = tuple(p for p in mine if p.name not in _PARTNER)
    if not parallel:
        scan = scan_feed(log, folder(mine), until=until, bar=bar, batch=BATCH)
        jobs.finish(model.jobs)
        return _rebuilt(model, scan, until)
    with Partner(Folded, "fold", str(log.layout.root), str(until), *_PARTNER) as partner:
        started = time.monotonic()
        scan = scan_feed(log, folder(mine), until=until, bar=bar, batch=BATCH)
        jobs.finish(model.jobs)
        own = time.monotonic() - started
        theirs = partner.result(timeout=max(PARTNER_GRACE_SECONDS, 2 * own))
    failed = theirs is None
    if theirs is None:  # the partner failed: fold its part here after all
        theirs = fold_part(log.layout.root, _PARTNER, until)
    for p in model.projections:  # after jobs: listings share the job table's id strings
        if p.name not in theirs.states:
            continue
        if p is model.listings:
            model.listings.unpack(theirs.states[p.name])  # as `feedscan.fold_part` packs it
        else:
            p.load(theirs.states[p.name])
    if theirs.scan.damage is not None and scan.damage is None:
        scan = theirs.scan
    elif theirs.scan.position != scan.position and scan.damage is None:
        scan.damage = f"the feed changed while it was read (at position {scan.position})"
    return _rebuilt(model, scan, until, processes=1 if failed else 2)


BATCH: Final = 256
"""Records per call of the fold: a rebuild cares for no record's bounds."""

PARTNER_GRACE_SECONDS: Final = 60.0
"""The second process reads the same feed and folds less: once this one is done, it gets
twice this one's time, and at least this long, before it is ended as hung and its part
is folded here."""


def _rebuilt(model: ReadModel, scan: Scan, until: int, processes: int = 1) -> Rebuilt:
    return Rebuilt(model, scan, scan.event_id if scan.position == until else None, processes)


_PARTNER: Final = ("listings", "leads")
"""The projections the second process of a parallel rebuild folds."""


def _counts(model: ReadModel) -> dict[str, int]:
    out = {}
    for p in model.projections:
        found = entities(model, p.name)
        out[p.name] = len(found) if found is not None else -1
    return out


def _load(
    checkpoint: Checkpoint, states: dict[str, bytes], path: Path
) -> tuple[ReadModel | None, str | None]:
    live = ReadModel()
    names = {p.name for p in live.projections}
    if checkpoint.format != FORMAT or set(checkpoint.sizes) != names:
        return None, (
            f"the live projections' checkpoint {path} is of another format "
            f"({checkpoint.format}, {sorted(checkpoint.sizes)}); serve rebuilds it at its "
            "next start"
        )
    try:
        for p in live.projections:  # jobs before listings, as the runner loads them
            p.load(states[p.name])
    except msgspec.DecodeError as exc:
        return None, f"the live projections' checkpoint {path} cannot be read: {exc}"
    return live, None


def _same_store(log: FileLog, checkpoint: Checkpoint, event_id: str | None) -> str | None:
    """Why the checkpoint is not of this feed, or None (the runner's `_usable` test)."""
    if event_id is not None and event_id != checkpoint.event_id:
        return (
            f"the event at the checkpoint's position {checkpoint.position} has another id: "
            "the checkpoint is not of this store"
        )
    if event_id is None and checkpoint.position > 0 and log.head() < checkpoint.position:
        return (
            f"the checkpoint is at position {checkpoint.position}, but the feed ends at "
            f"{log.head()}: it is not of this store, or the feed lost events"
        )
    return None  # or the checkpoint's event was pruned: a hole, and later events follow


def _print_compared(result: Compared, path: Path) -> None:
    rate = result.events / result.seconds if result.seconds > 0 else 0.0
    print(
        f"rebuilt from {result.events} events (up to position {result.position}) in "
        f"{result.seconds:.2f} s, {rate:,.0f} events/s"
    )
    if result.problem is not None:
        print(f"replay: {result.problem}")
        return
    if result.checkpoint is None:
        for name, count in result.counts.items():
            print(f"{name:9} {count if count >= 0 else '?'} entries")
        print(f"replay: no checkpoint of the live projections ({path}): nothing to compare")
        return
    print(f"live projections: checkpoint at position {result.checkpoint.position}")
    for diff in result.projections:
        for line in describe(diff):
            print(line)
    verdict = "equals" if result.same else "DIFFERS from"
    print(f"replay: the rebuild {verdict} the live projections")


# -- as of a position or time ------------------------------------------------------------


def _as_of(log: FileLog, settings: ReplaySettings) -> int:
    model = ReadModel()
    if settings.job is not None:
        needed: tuple[Projection, ...] = (model.jobs,)
    elif settings.usage is not None:
        needed = (model.usage,)
    else:
        needed = (model.jobs, model.listings)
    at = settings.as_of
    with Bar("folding the feed", at if isinstance(at, int) else head_hint(log)) as bar:
        scan = scan_feed(
            log,
            folder(needed),
            until=at if isinstance(at, int) else None,
            until_time=at if isinstance(at, datetime) else None,
            bar=bar,
        )
    if scan.damage is not None:
        print(
            f"jobtrail replay: the feed is damaged after position {scan.position}: {scan.damage}",
            file=sys.stderr,
        )
        return 1
    point: dict[str, Any] = {
        "position": scan.position,
        "recorded_at": scan.recorded_at.isoformat() if scan.recorded_at else None,
    }
    if at is not None:
        point["asked"] = at if isinstance(at, int) else at.isoformat()
    answer: dict[str, Any] = {"as_of": point}
    if settings.job is not None:
        view = model.jobs.get(settings.job)
        if view is None:
            print(
                f"jobtrail replay: job {settings.job} did not exist as of position {scan.position}",
                file=sys.stderr,
            )
            return 1
        answer["job"] = {**job_json(view), "site_id": view.site_id, "version": view.version}
    elif settings.usage is not None:
        site, month = settings.usage
        if month is None:
            when = at if isinstance(at, datetime) else scan.recorded_at or datetime.now(UTC)
            month = when.astimezone(UTC).strftime("%Y-%m")
        answer["site_id"] = site
        answer["usage"] = model.usage.usage(site, month)
    else:
        assert settings.listing is not None
        page = model.listings.page(
            settings.listing,
            user_id=settings.user,
            statuses=settings.statuses,
            job_type=settings.job_type,
            limit=settings.limit,
        )
        answer["site_id"] = settings.listing
        answer["jobs"] = [job_json(v) for v in page.jobs]
        answer["count"] = page.count
        answer["next_cursor"] = page.next_cursor
    sys.stdout.write(msgspec.json.encode(answer).decode() + "\n")
    return 0
