"""`jobtrail audit JOB_ID`: one job's whole history as a timeline, and what it adds up to.

Read from the job's own stream, read-only: the same events `GET /api/jobs/{id}/events`
shows, with the time between steps, then a summary (attempts per round and how long
each took, retries and cancellation and who asked for them). Operators see every site;
`--site` narrows the lookup, and a job of another site is then "no such job", as the API
says for another site's job.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventstore import streams
from eventstore.clock import timestamp
from eventstore.errors import InvalidId, StorageError
from eventstore.events import (
    DocumentAdded,
    DocumentRemoved,
    EvaluationQueued,
    IdempotencyKeyUsed,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobLeaseRenewed,
    JobProgressed,
    JobPruned,
    JobRequested,
    JobRetried,
    JobStarted,
    LeadEvaluated,
    LeadSaved,
    QuotaReserved,
    QuotaSet,
)
from eventstore.layout import NotADataDirectory
from eventstore.records import RecordedEvent
from projections.jobs import FINAL, JobView, apply_job
from service.events_api import event_json
from service.operator import command_parser
from service.operator.feedscan import open_feed
from service.views import job_json

DESCRIPTION = """\
Prints one job's whole history, read from its own stream: a timeline (version, position
in the feed, time recorded, event type, the data that matters, time since the previous
event), then a summary: status, attempts per round with each one's duration (started to
its end), total duration (requested to final), queue time, retries (automatic or manual)
and cancellation, with who asked for them where the event names them, and the result's
size. Operators see every site: the job's site is printed; with --site, a job of another
site is "no such job". Read-only: safe beside running serve and worker processes.
"""

EPILOG = """\
exit status:
  0  the history was printed
  1  no such job (in --site), or its stream cannot be read
  2  bad usage (JOB_ID not a UUID, a malformed --site), or DATA is missing or not a
     jobtrail data directory
"""

WIDTH: Final = 160
"""Columns of the plain text printed when standard output is not a terminal."""

SHOWN: Final = 60
"""Characters of a message, a result or metadata shown in the timeline."""

_JSON: Final = msgspec.json.Encoder()


class AuditSettings(msgspec.Struct, frozen=True, kw_only=True):
    data: Path
    job_id: str
    site: str | None = None
    json: bool = False


class Attempt(msgspec.Struct, kw_only=True):
    """One attempt: from its `started` to the event that ended it."""

    round: int  # 1, then one more after each manual retry
    attempt: int
    worker_id: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str = "running"  # completed, failed, cancelled, running, or unknown
    error_code: str | None = None
    error_message: str | None = None

    @property
    def seconds(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None


class Retry(msgspec.Struct, kw_only=True):
    at: datetime
    manual: bool
    next_attempt_at: datetime
    after_error: str | None  # the code of the failure it follows
    by: str | None  # automatic: the worker that recorded the failure; manual: the user


class Cancellation(msgspec.Struct, kw_only=True):
    requested_by: str | None = None
    requested_at: datetime | None = None
    by: str | None = None
    at: datetime | None = None


class Summary(msgspec.Struct, kw_only=True):
    """What a job's history adds up to, folded from its events alone."""

    created_at: datetime
    ended_at: datetime | None = None  # when it became final (completed, failed, cancelled)
    first_started_at: datetime | None = None
    rounds: int = 1
    attempts: list[Attempt] = []
    retries: list[Retry] = []
    cancellation: Cancellation | None = None
    result_bytes: int | None = None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub,
        "audit",
        summary="print one job's history as a timeline, with a summary of its attempts",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("job_id", metavar="JOB_ID", help="the job's id (a UUID)")
    p.add_argument(
        "--site", help="look for the job in this site only (another site's job: no such job)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: "job" (as GET /api/jobs/{id}, with site_id and '
        'version), "events" (the API\'s event JSON) and "summary"',
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = AuditSettings(
            data=Path(args.data),
            job_id=streams.valid_job_id(args.job_id),
            site=streams.valid_id(args.site, "site id") if args.site is not None else None,
            json=bool(args.json),
        )
    except InvalidId as exc:
        print(f"jobtrail audit: {exc}", file=sys.stderr)
        return 2
    try:
        log = open_feed(settings.data)
    except NotADataDirectory as exc:
        print(f"jobtrail audit: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"jobtrail audit: {exc}", file=sys.stderr)
        return 1
    with closing(log):
        try:
            events = log.read_stream(streams.job(settings.job_id))
        except (OSError, msgspec.DecodeError) as exc:
            print(f"jobtrail audit: the job's stream cannot be read: {exc}", file=sys.stderr)
            return 1
    view = fold(events)
    if view is None or (settings.site is not None and view.site_id != settings.site):
        scope = f" in site {settings.site}" if settings.site is not None else ""
        print(f"jobtrail audit: no such job {settings.job_id}{scope}", file=sys.stderr)
        return 1
    summary = summarize(events)
    if settings.json:
        sys.stdout.write(_JSON.encode(audit_json(view, events, summary)).decode() + "\n")
    else:
        print_audit(view, events, summary)
    return 0


def fold(events: list[RecordedEvent]) -> JobView | None:
    """The job as the API shows it after these events (None before its `requested`)."""
    view: JobView | None = None
    for recorded in events:
        view = apply_job(view, recorded)
    return view


# -- the summary -----------------------------------------------------------------------


def summarize(events: list[RecordedEvent]) -> Summary:
    """Attempts, retries and cancellation, event by event (events of other kinds ignored).

    A manual retry begins a new round, whose attempts count from 1 again.
    """
    summary = Summary(created_at=events[0].recorded_at)
    current: Attempt | None = None  # the attempt running now
    last_failure: Attempt | None = None
    for recorded in events:
        at = recorded.recorded_at
        match recorded.event:
            case JobStarted(attempt=attempt, worker_id=worker_id):
                if current is not None:  # never ended in the history: a lost worker
                    current.outcome = "unknown"
                current = Attempt(
                    round=summary.rounds,
                    attempt=attempt,
                    worker_id=worker_id or None,
                    started_at=at,
                )
                summary.attempts.append(current)
                if summary.first_started_at is None:
                    summary.first_started_at = at
            case JobFailed(error_code=code, error_message=message, will_retry=will_retry):
                if current is not None:
                    current.ended_at, current.outcome = at, "failed"
                    current.error_code, current.error_message = code, message
                    last_failure, current = current, None
                if not will_retry and summary.ended_at is None:
                    summary.ended_at = at
            case JobRetried(next_attempt_at=next_at, manual=manual, by=retried_by):
                if manual:
                    summary.rounds += 1
                    summary.ended_at = None  # a failed job begins a new round
                summary.retries.append(
                    Retry(
                        at=at,
                        manual=manual,
                        next_attempt_at=next_at,
                        after_error=last_failure.error_code if last_failure else None,
                        by=retried_by if manual else _worker_of(last_failure),
                    )
                )
            case JobCompleted(result=result):
                if current is not None:
                    current.ended_at, current.outcome = at, "completed"
                    current = None
                summary.result_bytes = len(msgspec.json.encode(result))
                summary.ended_at = summary.ended_at or at
            case JobCancelRequested(by=by):
                cancellation = summary.cancellation or Cancellation()
                cancellation.requested_by, cancellation.requested_at = by, at
                summary.cancellation = cancellation
            case JobCancelled(by=by):
                cancellation = summary.cancellation or Cancellation()
                cancellation.by, cancellation.at = by, at
                summary.cancellation = cancellation
                if current is not None:
                    current.ended_at, current.outcome = at, "cancelled"
                    current = None
                summary.ended_at = summary.ended_at or at
            case (
                JobRequested()
                | JobProgressed()
                | JobLeaseRenewed()
                | QuotaReserved()
                | QuotaSet()
                | LeadSaved()
                | DocumentAdded()
                | DocumentRemoved()
                | LeadEvaluated()
                | EvaluationQueued()
                | IdempotencyKeyUsed()
                | JobPruned()
            ):
                pass
    return summary


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def summary_json(view: JobView, summary: Summary) -> dict[str, Any]:
    """The summary with the API's forms: RFC 3339 times with milliseconds, durations in ms."""

    def ts(value: datetime | None) -> str | None:
        return None if value is None else timestamp(value)

    ended = summary.ended_at if view.status in FINAL else None
    cancel = summary.cancellation
    return {
        "status": view.status,
        "site_id": view.site_id,
        "created_at": ts(summary.created_at),
        "ended_at": ts(ended),
        "total_ms": _ms((ended - summary.created_at).total_seconds()) if ended else None,
        "queued_ms": _ms(
            (summary.first_started_at - summary.created_at).total_seconds()
            if summary.first_started_at
            else None
        ),
        "rounds": summary.rounds,
        "attempts": [
            {
                "round": a.round,
                "attempt": a.attempt,
                "worker_id": a.worker_id,
                "started_at": ts(a.started_at),
                "ended_at": ts(a.ended_at),
                "duration_ms": _ms(a.seconds),
                "outcome": a.outcome,
                "error_code": a.error_code,
                "error_message": a.error_message,
            }
            for a in summary.attempts
        ],
        "retries": [
            {
                "at": ts(r.at),
                "manual": r.manual,
                "next_attempt_at": ts(r.next_attempt_at),
                "after_error": r.after_error,
                "by": r.by,
            }
            for r in summary.retries
        ],
        "cancellation": None
        if cancel is None
        else {
            "requested_by": cancel.requested_by,
            "requested_at": ts(cancel.requested_at),
            "by": cancel.by,
            "at": ts(cancel.at),
        },
        "result_bytes": summary.result_bytes,
    }


def audit_json(view: JobView, events: list[RecordedEvent], summary: Summary) -> dict[str, Any]:
    return {
        "job": {**job_json(view), "site_id": view.site_id, "version": view.version},
        "events": [event_json(e) for e in events],
        "summary": summary_json(view, summary),
    }


# -- text ------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A short human form: 0.4 ms, 850 ms, 2.35 s, 4m 05s, 3h 12m, 2d 04h."""
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def details(recorded: RecordedEvent, round_: int) -> str:
    """The data of an event that matters when reading a history."""
    match recorded.event:
        case JobRequested() as e:
            text = (
                f"type {e.job_type}, site {e.site_id}, user {e.user_id}, "
                f"priority {e.priority}, max_retries {e.max_retries}"
            )
            if e.metadata:
                text += f", metadata {_short(msgspec.json.encode(e.metadata).decode())}"
            return text
        case JobStarted(attempt=attempt, worker_id=worker_id, lease_expires_at=lease):
            text = f"attempt {attempt} (round {round_}), worker {worker_id or '?'}"
            return text + (f", lease until {timestamp(lease)}" if lease else "")
        case JobProgressed(progress=progress, message=message):
            return f"{progress}% {_short(message)}".rstrip()
        case JobCompleted(result=result):
            encoded = msgspec.json.encode(result).decode()
            return f"result ({len(encoded)} bytes): {_short(encoded)}"
        case JobFailed(error_code=code, error_message=message, attempt=attempt, will_retry=w):
            then = "will retry" if w else "final"
            return f"attempt {attempt}: {code}: {_short(message)} ({then})"
        case JobRetried(next_attempt_at=next_at, manual=manual, by=by):
            kind = "automatic"
            if manual:
                kind = f"manual: a new round, by {by}" if by else "manual: a new round"
            return f"{kind}, next attempt at {timestamp(next_at)}"
        case JobCancelRequested(by=by):
            return f"by {by} (the running handler is asked to stop)"
        case JobCancelled(by=by):
            return f"by {by}"
        case JobLeaseRenewed(attempt=attempt, lease_expires_at=lease):
            return f"attempt {attempt}, lease until {timestamp(lease)}"
        case other:
            return _short(msgspec.json.encode(other).decode())


def timeline(events: list[RecordedEvent]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("ver", justify="right")
    table.add_column("pos", justify="right")
    table.add_column("recorded at (UTC)", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("data")
    table.add_column("+Δ", justify="right", no_wrap=True)
    previous: datetime | None = None
    round_ = 1
    for e in events:
        if isinstance(e.event, JobRetried) and e.event.manual:
            round_ += 1
        gap = (e.recorded_at - previous).total_seconds() if previous is not None else None
        step = "" if gap is None else "+" + duration(gap)
        previous = e.recorded_at
        table.add_row(
            str(e.version),
            str(e.position),
            timestamp(e.recorded_at),
            e.type,
            Text(details(e, round_)),  # Text: no rich markup read in the data
            step,
        )
    return table


def print_audit(view: JobView, events: list[RecordedEvent], summary: Summary) -> None:
    out = Console(highlight=False, width=None if sys.stdout.isatty() else WIDTH)
    out.print(
        Text(
            f"job {view.job_id}  type {view.job_type}  site {view.site_id}  "
            f"user {view.user_id}  status {view.status}"
        )
    )
    out.print(timeline(events))
    for line in summary_lines(view, summary):
        out.print(Text(line))


def summary_lines(view: JobView, summary: Summary) -> list[str]:
    lines = [f"status      {view.status}"]
    ended = summary.ended_at if view.status in FINAL else None
    if ended is not None:
        total = duration((ended - summary.created_at).total_seconds())
        lines.append(
            f"total       {total} (requested {timestamp(summary.created_at)}, "
            f"{view.status} {timestamp(ended)})"
        )
    else:
        lines.append(f"total       not final yet (requested {timestamp(summary.created_at)})")
    if summary.first_started_at is not None:
        queued = duration((summary.first_started_at - summary.created_at).total_seconds())
        lines.append(f"queued      {queued} before the first attempt")
    rounds = f" in {summary.rounds} rounds" if summary.rounds > 1 else ""
    lines.append(f"attempts    {len(summary.attempts)}{rounds}")
    for a in summary.attempts:
        took = duration(a.seconds) if a.seconds is not None else "-"
        outcome = a.outcome
        if a.error_code is not None:
            outcome += f" {a.error_code}: {_short(a.error_message or '')}"
        lines.append(
            f"  round {a.round} attempt {a.attempt}  worker {a.worker_id or '?'}  {took}  {outcome}"
        )
    manual = sum(r.manual for r in summary.retries)
    lines.append(f"retries     {len(summary.retries) - manual} automatic, {manual} manual")
    for r in summary.retries:
        kind = "manual" if r.manual else f"automatic after {r.after_error or '?'}"
        by = (f" (by {r.by})" if r.manual else f" (worker {r.by})") if r.by else ""
        lines.append(
            f"  {timestamp(r.at)}  {kind}{by}, next attempt at {timestamp(r.next_attempt_at)}"
        )
    cancel = summary.cancellation
    if cancel is not None:
        parts = []
        if cancel.requested_by is not None and cancel.requested_at is not None:
            parts.append(f"requested by {cancel.requested_by} at {timestamp(cancel.requested_at)}")
        if cancel.by is not None and cancel.at is not None:
            parts.append(f"cancelled by {cancel.by} at {timestamp(cancel.at)}")
        lines.append("cancelled   " + "; ".join(parts))
    if summary.result_bytes is not None:
        lines.append(f"result      {summary.result_bytes} bytes of JSON")
    if view.error_code is not None:
        lines.append(f"last error  {view.error_code}: {_short(view.error or '')}")
    return lines


def _worker_of(failure: Attempt | None) -> str | None:
    """The worker that recorded the failure an automatic retry follows."""
    return failure.worker_id if failure is not None else None
