"""Event builders, a deterministic clock and plain folds shared by the projection tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventstore import ANY, MemoryStore, RecordedEvent
from eventstore.events import (
    AnyEvent,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRequested,
    JobRetried,
    JobStarted,
)
from projections import JobView, ReadModel, apply_job

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def job_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def job_stream(n: int) -> str:
    return f"job:{job_id(n)}"


class Clock:
    """A store clock that moves one second per append, so two stores built alike agree."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def make_store() -> MemoryStore:
    return MemoryStore(clock=Clock())


def history(
    stream: str, events: Sequence[AnyEvent], first: int = 1, version: int = 1
) -> list[RecordedEvent]:
    """Events as a store records them in one stream: from position `first` and `version`."""
    return [
        RecordedEvent(
            position=first + i,
            stream=stream,
            version=version + i,
            id=str(uuid.UUID(int=first + i)),
            recorded_at=T0 + timedelta(seconds=first + i),
            event=event,
        )
        for i, event in enumerate(events)
    ]


def fold(recorded: Sequence[RecordedEvent]) -> JobView | None:
    view: JobView | None = None
    for r in recorded:
        view = apply_job(view, r)
    return view


def rebuild(events: Sequence[RecordedEvent]) -> ReadModel:
    """The plain fold from scratch that every other way of building must equal."""
    model = ReadModel()
    for event in events:
        for projection in model.projections:
            projection.apply(event)
    return model


async def append_all(store: MemoryStore, items: Sequence[tuple[str, AnyEvent]]) -> None:
    for stream, event in items:
        await store.append(stream, [event], ANY)


# -- job events, with the defaults a test rarely cares about -----------------------------


def requested(
    site: str = "site_a",
    user: str = "user_1",
    job_type: str = "ai_evaluation",
    max_retries: int = 3,
    metadata: dict[str, Any] | None = None,
) -> JobRequested:
    return JobRequested(
        job_type=job_type,
        site_id=site,
        user_id=user,
        params={"lead_id": "lead_1"},
        metadata=metadata if metadata is not None else {"lead_id": "lead_1"},
        max_retries=max_retries,
    )


def started(attempt: int = 1, worker: str = "worker-1") -> JobStarted:
    return JobStarted(attempt=attempt, worker_id=worker, lease_expires_at=T0 + timedelta(hours=1))


def progressed(progress: int, message: str = "") -> JobProgressed:
    return JobProgressed(progress=progress, message=message)


def completed(result: Any = None) -> JobCompleted:
    return JobCompleted(result=result)


def failed(attempt: int = 1, will_retry: bool = False, code: str = "ModelTimeout") -> JobFailed:
    return JobFailed(
        error_code=code,
        error_message=f"{code} on attempt {attempt}",
        attempt=attempt,
        will_retry=will_retry,
    )


def retried(seconds: int = 30, manual: bool = False) -> JobRetried:
    return JobRetried(next_attempt_at=T0 + timedelta(seconds=seconds), manual=manual)


def cancelled(by: str = "user_1") -> JobCancelled:
    return JobCancelled(by=by)
