"""The transitions the job rules forbid, named for `jobtrail verify`.

The fold (`jobs.apply_job`) never raises and stays lenient, so a rebuild always succeeds;
this module says which events it had to ignore or accept against the rules.
"""

from __future__ import annotations

from eventstore.events import (
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobLeaseRenewed,
    JobProgressed,
    JobRequested,
    JobRetried,
    JobStarted,
    event_type,
)
from eventstore.records import RecordedEvent
from projections.jobs import FINAL, JobView, awaiting_retry


def illegal_transition(view: JobView | None, recorded: RecordedEvent) -> str | None:
    """Name the rule an event of a job stream breaks, or None when it is allowed."""
    event = recorded.event
    name = event_type(event)
    if view is None:
        return None if isinstance(event, JobRequested) else f"{name} before requested"
    status = view.status
    match event:
        case JobRequested():
            return "requested twice"
        case JobRetried(manual=True):
            if status != "failed":
                return f"manual retry while {status}"
            if not view.can_retry:
                return f"manual retry after {view.retry_count} of {view.max_retries} attempts"
            return None
        case _ if status in FINAL:
            return f"{name} after {status}"
        case JobStarted(attempt=attempt):
            if status == "running":
                return "started while running"
            if awaiting_retry(view):
                return "started before the retry was scheduled"
            if attempt != view.attempt + 1:
                return f"started attempt {attempt}, expected {view.attempt + 1}"
            return None
        case JobProgressed() | JobCompleted():
            return None if status == "running" else f"{name} while {status}"
        case JobFailed(will_retry=will_retry):
            if status != "running":
                return f"failed while {status}"
            if will_retry and view.retry_count + 1 >= view.max_retries:
                return f"will_retry after the last of {view.max_retries} attempts"
            return None
        case JobRetried():
            return None if awaiting_retry(view) else "retried without a failed attempt to retry"
        case JobCancelled():
            return None
        case JobLeaseRenewed(attempt=attempt):
            if status != "running":
                return f"{name} while {status}"
            return None if attempt == view.attempt else f"{name} of attempt {attempt}"
        case JobCancelRequested():
            return None if status == "running" else f"{name} while {status}"
        case _:
            return f"{name} in a job stream"
