"""The jobtrail history of a legacy job: the events, their times and their fixed ids.

Pure: the same legacy record always gives the same events with the same ids (UUIDv5 of
the job id and the event's place), which is what makes a second import a no-op. The
events follow the job rules that `jobtrail verify` checks (`requested`, `started`, then
`completed` or `failed`), so an imported history is a legal one.

A history is appended in two parts, each recorded at its own legacy time: `requested`
and `started` at `created_at`, the end at `updated_at`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import msgspec

from eventstore.events import (
    Event,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRequested,
    JobStarted,
)
from eventstore.records import NewEvent, new
from service.operator.legacy_records import LegacyJob

JOB_TYPE: Final = "legacy"
"""The job type of imported jobs; no worker has a handler for it, so none ever runs one."""

IMPORTER: Final = "import-legacy"
"""The `worker_id` of the `started` event of an imported job."""

UNFINISHED: Final = "ImportedUnfinished"
"""The error code of a job that was still queued or running in the old store (API.md 5)."""

FAILED: Final = "ImportedFailed"
"""The error code of a job that had failed in the old store, which kept no codes."""

MAX_RETRIES: Final = 1
"""One attempt, used up: an imported job can never be retried into a queue no worker reads."""

_NAMESPACE: Final = uuid.UUID("6f1c1c52-7c3e-4e0b-9a57-2b8f5c1d0e6a")


class Part(msgspec.Struct, frozen=True):
    """Events appended together, recorded at `at`."""

    at: datetime
    events: list[NewEvent]


def event_id(job_id: str, index: int) -> str:
    """The fixed id of the job's `index`-th imported event (0 is `requested`)."""
    return str(uuid.uuid5(_NAMESPACE, f"legacy:{job_id}:{index}"))


def history(job: LegacyJob, site_id: str, user_id: str) -> list[Part]:
    """The parts that, appended in order, make the job's stream."""
    metadata: dict[str, Any] = {"legacy_format": job.format}
    if job.result is not None and job.status != "completed":
        metadata["legacy_result"] = job.result  # a failed job has no `result` in jobtrail
    requested = JobRequested(
        job_type=JOB_TYPE,
        site_id=site_id,
        user_id=user_id,
        metadata=metadata,
        max_retries=MAX_RETRIES,
    )
    started = JobStarted(attempt=1, worker_id=IMPORTER)
    end: list[Event] = []
    if job.progress > 0 and job.status != "completed":
        end.append(JobProgressed(progress=job.progress))
    if job.status == "completed":
        end.append(JobCompleted(result=job.result))
    elif job.status == "failed":
        message = job.error_message or "Job failed"
        end.append(JobFailed(error_code=FAILED, error_message=message, attempt=1))
    else:
        message = f"The job was still {job.status} in the older job store when it was imported."
        end.append(JobFailed(error_code=UNFINISHED, error_message=message, attempt=1))
    # `started` goes with `requested`: between the two appends the job is running without a
    # lease, which no worker ever claims, whatever handlers it has.
    parts: list[tuple[datetime, list[Event]]] = [
        (job.created_at, [requested, started]),
        (job.updated_at, end),
    ]
    out: list[Part] = []
    index = 0
    for at, events in parts:
        wrapped = []
        for event in events:
            wrapped.append(new(event, event_id(job.job_id, index)))
            index += 1
        out.append(Part(at, wrapped))
    return out
