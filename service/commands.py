"""Commands: read the job's own stream, decide, append with the version read.

A job's state is folded from its stream on every command, not taken from a projection,
so every `serve` process decides on the same, current history; the append's expected
version turns a race into a conflict, which is retried once re-read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from eventstore import NO_STREAM, AppendTo, EventStore, WrongExpectedVersion, new, streams
from eventstore.events import JobCancelled, JobCancelRequested, JobRequested, JobRetried
from eventstore.records import RecordedEvent, new_event_id
from projections.jobs import JobView, apply_job, load_job
from service.auth import Principal
from service.errors import JobNotFound, NotCancellable, NotRetryable, StorageUnavailable

CONFLICT_RETRIES = 5


class JobCreate(msgspec.Struct, forbid_unknown_fields=False):
    """The body of `POST /api/jobs`."""

    type: str
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    priority: int = 0
    max_retries: int = 3


def may_see(job: JobView, who: Principal) -> bool:
    """Its site's admins see a job, and so does its creator; nobody else."""
    return job.site_id == who.site_id and (who.is_admin or job.user_id == who.user_id)


async def visible_job(store: EventStore, job_id: str, who: Principal) -> JobView:
    """The job if the caller may see it: its site's admins, or its creator; else 404."""
    job = await load_job(store, job_id)
    if (
        job is None
        or job.site_id != who.site_id
        or (not who.is_admin and job.user_id != who.user_id)
    ):
        raise JobNotFound("Job not found.")
    return job


def new_job_id() -> str:
    """A fresh job id: a UUIDv7, lowercase."""
    return new_event_id()


async def create_job(
    store: EventStore,
    who: Principal,
    body: JobCreate,
    job_id: str,
    also: Sequence[AppendTo] = (),
) -> int:
    """Append a new job's `requested`, together with `also` (all or nothing); its position."""
    event = JobRequested(
        job_type=body.type,
        site_id=who.site_id,
        user_id=who.user_id,
        params=body.params,
        metadata=body.metadata,
        priority=body.priority,
        max_retries=body.max_retries,
    )
    recorded = await store.append_many(
        [AppendTo(streams.job(job_id), [new(event)], NO_STREAM), *also]
    )
    return max(e.position for group in recorded for e in group)


async def retry_job(
    store: EventStore, who: Principal, job_id: str, clock: Callable[[], datetime]
) -> JobView:
    """Start a new round of attempts for a failed job that may be retried."""
    for _ in range(CONFLICT_RETRIES):
        job = await visible_job(store, job_id, who)
        if not job.can_retry:
            raise NotRetryable("Only a failed job with attempts left can be retried.")
        try:
            recorded = await store.append(
                streams.job(job_id),
                [JobRetried(next_attempt_at=clock(), manual=True, by=who.user_id)],
                job.version,
            )
        except WrongExpectedVersion:
            continue  # the job moved on meanwhile: decide again on what it is now
        return folded(job, recorded)
    raise StorageUnavailable("The job kept changing; try again.")


def folded(job: JobView, recorded: Sequence[RecordedEvent]) -> JobView:
    """The job just after the events this command appended: what the command answers.

    Not a re-read: a worker may claim the job the moment it is queued again, and the
    answer is about what the command did (a retry answers pending).
    """
    view: JobView | None = job
    for event in recorded:
        view = apply_job(view, event)
    assert view is not None
    return view


JobLoader = Callable[[EventStore, str, Principal], Awaitable[JobView]]


async def cancel_job(
    store: EventStore, who: Principal, job_id: str, load: JobLoader = visible_job
) -> JobView:
    """Cancel a pending job at once; ask a running one's handler to stop.

    Cancelling a cancelled job again changes nothing; a completed or failed one is 409.
    `load` reads the job with the route's visibility rule (404 for one the caller may
    not see): the generic routes' by default, the ops routes' for evaluation jobs.
    """
    for _ in range(CONFLICT_RETRIES):
        job = await load(store, job_id, who)
        if job.status == "cancelled" or (job.status == "running" and job.cancel_requested):
            return job
        if job.status in ("completed", "failed"):
            raise NotCancellable(f"A {job.status} job cannot be cancelled.")
        event = (
            JobCancelled(by=who.user_id)
            if job.status == "pending"
            else JobCancelRequested(by=who.user_id)
        )
        try:
            recorded = await store.append(streams.job(job_id), [event], job.version)
        except WrongExpectedVersion:
            continue
        return folded(job, recorded)  # a re-read could already show the handler stopped
    raise StorageUnavailable("The job kept changing; try again.")
