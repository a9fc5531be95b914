"""Every event jobtrail stores: frozen msgspec Structs in one tagged union.

Tags never change and stored events are never rewritten. A new field gets a default;
a change in meaning becomes a new type. Build events with keywords (`kw_only`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Base of every stored event; its tag is the event's `type`."""


# -- a job's own stream: job:<uuid> ---------------------------------------------------


class JobRequested(Event, tag="requested", frozen=True, kw_only=True):
    """A client asked for a job; the first event of every job stream."""

    job_type: str
    site_id: str
    user_id: str
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    priority: int = 0
    max_retries: int = 3


class JobStarted(Event, tag="started", frozen=True, kw_only=True):
    """A worker claimed the job for one attempt, holding a lease until `lease_expires_at`."""

    attempt: int
    worker_id: str = ""
    lease_expires_at: datetime | None = None


class JobProgressed(Event, tag="progressed", frozen=True, kw_only=True):
    """The running handler reported progress (0-100) and a message."""

    progress: int
    message: str = ""


class JobCompleted(Event, tag="completed", frozen=True, kw_only=True):
    """The handler returned; `result` is what it returned."""

    result: Any = None


class JobFailed(Event, tag="failed", frozen=True, kw_only=True):
    """An attempt failed; `will_retry` says an automatic `retried` follows."""

    error_code: str
    error_message: str
    attempt: int
    will_retry: bool = False
    retryable: bool = False


class JobRetried(Event, tag="retried", frozen=True, kw_only=True):
    """The job is queued again, due at `next_attempt_at`; `manual` starts a new round.

    `by` names who asked for a manual round (a user id); automatic retries leave it unset.
    """

    next_attempt_at: datetime
    manual: bool = False
    by: str | None = None


class JobCancelled(Event, tag="cancelled", frozen=True, kw_only=True):
    """The job was cancelled by `by` (a user id, or `system`)."""

    by: str


class JobCancelRequested(Event, tag="cancel_requested", frozen=True, kw_only=True):
    """Cancellation of a running job was asked for; `cancelled` follows when its handler stops.

    A pending job is cancelled at once instead (`cancelled` only)."""

    by: str


class JobLeaseRenewed(Event, tag="lease_renewed", frozen=True, kw_only=True):
    """The worker running attempt `attempt` is alive and holds the job until `lease_expires_at`.

    Another worker takes over only a job whose lease ran out; its append then moves the
    stream's version, so whatever the old worker appends afterwards is rejected.
    """

    attempt: int
    lease_expires_at: datetime


JOB_EVENTS = (
    JobRequested,
    JobStarted,
    JobProgressed,
    JobCompleted,
    JobFailed,
    JobRetried,
    JobCancelled,
    JobCancelRequested,
    JobLeaseRenewed,
)

# -- a site's pruned jobs: pruned:<site> ----------------------------------------------


class JobPruned(Event, tag="job_pruned", frozen=True, kw_only=True):
    """Retention removed a finished job's stream; its positions in the feed became holes.

    The tombstone keeps what the API needs to answer 410 to those who could see the job
    (site, creator, type) and what the projections need to forget it the way a rebuild
    without its events would (`created_position`, `lead_id`).
    """

    job_id: str
    site_id: str
    user_id: str
    job_type: str
    status: str
    finished_at: datetime
    last_version: int
    created_position: int
    lead_id: str | None = None


# -- a site's monthly usage: usage:<site>:<YYYY-MM> -------------------------------------


class QuotaReserved(Event, tag="quota_reserved", frozen=True, kw_only=True):
    """One unit of the month's quota taken by an accepted evaluation job."""

    job_id: str


# -- a site's settings: site:<site> ----------------------------------------------------


class QuotaSet(Event, tag="quota_set", frozen=True, kw_only=True):
    """An admin set the site's monthly limit and tier, holding from `from_month` on."""

    limit: int
    tier: str
    from_month: str
    by: str = ""


# -- a lead of a site: lead:<site>:<lead> ----------------------------------------------


class LeadSaved(Event, tag="lead_saved", frozen=True, kw_only=True):
    """The lead's own fields were created or replaced (status, score, documents kept)."""

    fields: dict[str, Any]


class DocumentAdded(Event, tag="document_added", frozen=True, kw_only=True):
    """A document was stored in the blob store under its content hash."""

    document_id: str
    document_type: str
    mime_type: str
    size: int
    sha256: str
    uploaded_at: datetime


class DocumentRemoved(Event, tag="document_removed", frozen=True, kw_only=True):
    """A document was removed from the lead."""

    document_id: str


class LeadEvaluated(Event, tag="lead_evaluated", frozen=True, kw_only=True):
    """An evaluation job completed for the lead; its score and label follow."""

    job_id: str
    evaluation_id: str
    score: int
    label: str


class EvaluationQueued(Event, tag="evaluation_queued", frozen=True, kw_only=True):
    """An evaluation job of the lead was queued: created, or retried by hand (`manual`).

    Its only purpose is to move the lead stream's version: creates and manual retries
    each append one with the lead version they read before checking the lead's active
    jobs, so two of them racing (in any processes, in any months) cannot both succeed.
    """

    job_id: str
    manual: bool = False


# -- an idempotency key of a site's user: idem:<site>:<user>:<sha256 of the key> --------


class IdempotencyKeyUsed(Event, tag="idempotency_key_used", frozen=True, kw_only=True):
    """A request with this key was accepted: a repeat gets `response` again (24 h)."""

    request_sha256: str
    job_id: str
    status: int
    response: dict[str, Any]


AnyEvent = (
    JobRequested
    | JobStarted
    | JobProgressed
    | JobCompleted
    | JobFailed
    | JobRetried
    | JobCancelled
    | JobCancelRequested
    | JobLeaseRenewed
    | QuotaReserved
    | QuotaSet
    | LeadSaved
    | DocumentAdded
    | DocumentRemoved
    | LeadEvaluated
    | EvaluationQueued
    | IdempotencyKeyUsed
    | JobPruned
)


def event_type(event: Event) -> str:
    """The stored `type` tag of an event."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
