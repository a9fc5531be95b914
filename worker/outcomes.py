"""What an attempt's end appends: pure decisions, shared by the attempt and the lease takeover.

Retry rules (API.md section 1): a failed attempt is retried automatically when its error
kind retries and attempts remain in the round (`retry_count + 1 < max_retries`); it then
appends `failed` (will_retry) and `retried` together, due after a backoff that doubles
from the base delay, with up to 10% random jitter on top, capped at an hour.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from eventstore.events import Event, JobCancelled, JobCompleted, JobFailed, JobRetried
from projections.jobs import JobView

MAX_BACKOFF: Final = 3600.0
JITTER: Final = 0.10

RETRYING_CODES: Final = frozenset(
    {"ProcessingError", "StorageError", "ModelTimeout", "WorkerLost", "RetryRequested"}
)
"""Error codes retried automatically; any other code ends the attempt's round."""


class Succeeded(msgspec.Struct, frozen=True):
    result: Any


class Failed(msgspec.Struct, frozen=True):
    code: str
    message: str
    retryable: bool
    delay: float | None = None
    """Seconds until the retry (`Retry(delay)`); None: the backoff decides."""


class Cancelled(msgspec.Struct, frozen=True):
    by: str


Outcome = Succeeded | Failed | Cancelled


def backoff(base: float, failed_attempts: int, rng: random.Random) -> float:
    """Seconds before the retry after `failed_attempts` failures: base, 2 x base, 4 x base..."""
    delay = base * 2.0 ** max(0, failed_attempts - 1)
    return min(MAX_BACKOFF, delay * (1.0 + JITTER * rng.random()))


def outcome_events(
    view: JobView, outcome: Outcome, now: datetime, base_delay: float, rng: random.Random
) -> list[Event]:
    """The events that end the attempt `view.attempt` of a running job with `outcome`.

    A failure of a job whose cancellation was asked for ends it `cancelled` instead: the
    client asked for it to stop, and a retry would start it again.
    """
    match outcome:
        case Succeeded(result=result):
            return [JobCompleted(result=result)]
        case Cancelled(by=by):
            return [JobCancelled(by=by)]
        case Failed() if view.cancel_requested:
            return [JobCancelled(by=view.cancel_requested_by or "system")]
        case Failed(code=code, message=message, retryable=retryable, delay=delay):
            failures = view.retry_count + 1
            will_retry = retryable and failures < view.max_retries
            failed = JobFailed(
                error_code=code,
                error_message=message,
                attempt=view.attempt,
                will_retry=will_retry,
                retryable=retryable,
            )
            if not will_retry:
                return [failed]
            wait = backoff(base_delay, failures, rng) if delay is None else max(0.0, delay)
            return [failed, JobRetried(next_attempt_at=now + timedelta(seconds=wait))]


def worker_lost(view: JobView) -> Failed:
    """The outcome a takeover records for an attempt whose worker stopped renewing its lease."""
    return Failed(
        code="WorkerLost",
        message=f"The worker running attempt {view.attempt} stopped renewing its lease.",
        retryable=True,
    )
