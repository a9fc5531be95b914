"""The job status view: a pure fold of one `job:<uuid>` stream, and the table of all jobs.

Transitions (anything else leaves the status as it is; `rules.illegal_transition` names it):

    (none)    --requested-->               pending
    pending   --started-->                 running      (a new attempt of the current round)
    running   --progressed-->              running
    running   --lease_renewed-->           running      (same attempt: the lease moves on)
    running   --completed-->               completed    (final)
    running   --failed, will_retry-->      pending      (error kept; `retried` schedules it)
    running   --failed-->                  failed       (final)
    pending   --retried-->                 pending      (`next_attempt_at` of the retry)
    failed    --retried, manual-->         pending      (a new round: attempts start from 0)
    pending   --cancelled-->               cancelled    (final)
    running   --cancelled-->               cancelled    (the handler stopped)

Lenient on purpose, so a rebuild never raises: `completed` and `failed` also end a job that
is pending (an imported or repaired history), and events after a final state are ignored,
except a manual `retried` of a failed job. Ignored events still move `version` and
`position`, because the service appends with `expected_version=view.version`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

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
from eventstore.records import RecordedEvent
from eventstore.store import EventStore
from eventstore.streams import job as job_stream
from eventstore.streams import job_id_of

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]

FINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})
"""Statuses that only a manual retry (of a failed job) leaves again."""


class JobView(msgspec.Struct, frozen=True, kw_only=True, gc=False, array_like=True):
    """Everything the API shows of a job, small enough to hold 100,000s of them.

    `gc=False`: views hold no cycles. `params`, `metadata` and `result` are kept as JSON
    (a third of the size of the decoded dicts); the properties decode them, and the
    service may embed the bytes as they are with `msgspec.Raw`. `array_like` keeps field
    names out of checkpoints; the API's JSON is built by the service, not encoded from here.
    """

    job_id: str
    job_type: str
    site_id: str
    user_id: str
    params_json: bytes
    metadata_json: bytes
    priority: int
    max_retries: int
    status: JobStatus
    created_at: datetime
    created_position: int
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    progress: int = 0
    progress_message: str = ""
    result_json: bytes = b"null"
    error: str | None = None
    error_code: str | None = None
    attempt: int = 0
    retry_count: int = 0
    next_attempt_at: datetime | None = None
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    version: int
    position: int
    cancel_requested: bool = False  # array_like: new fields are only ever appended
    cancel_requested_by: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        return _decode_dict(self.params_json)

    @property
    def metadata(self) -> dict[str, Any]:
        return _decode_dict(self.metadata_json)

    @property
    def result(self) -> Any:
        return msgspec.json.decode(self.result_json)

    @property
    def can_retry(self) -> bool:
        """A failed job an operator may start a new round of (API: `can_retry`)."""
        return self.status == "failed" and self.retry_count < self.max_retries

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


_JSON: Final = msgspec.json.Encoder(enc_hook=repr)
_JSON_DICT: Final = msgspec.json.Decoder(dict[str, Any])
_EMPTY_JSON: Final = b"{}"
_NULL_JSON: Final = b"null"


def _decode_dict(data: bytes) -> dict[str, Any]:
    try:
        return _JSON_DICT.decode(data)
    except msgspec.ValidationError:
        return {}  # a dict `_json` had to keep as text (keys JSON cannot hold)


def _json(value: object) -> bytes:
    """JSON of a value from an event; a part JSON cannot hold is kept as its text.

    The common empty dict and None share one constant (equal bytes, no new object).
    """
    if value is None:
        return _NULL_JSON
    if type(value) is dict and not value:
        return _EMPTY_JSON
    try:
        return _JSON.encode(value)
    except (TypeError, ValueError, OverflowError):
        return _JSON.encode(repr(value))


_name: Final = sys.intern
"""Ids and codes recur across 100,000s of views: one copy of each in memory.

`sys.intern` itself rather than a function calling it: the fold calls it on most events.
"""


async def load_job(store: EventStore, job_id: str) -> JobView | None:
    """The job as its own stream tells it now (not as a projection last saw it); None if none.

    Commands of the service and the worker's fenced appends decide on this, so every
    process decides on the same, current history.
    """
    view: JobView | None = None
    for recorded in await store.read_stream(job_stream(job_id)):
        view = apply_job(view, recorded)
    return view


def awaiting_retry(view: JobView) -> bool:
    """Pending after a failed attempt that will be retried, before `retried` scheduled it."""
    return view.status == "pending" and view.error_code is not None and view.next_attempt_at is None


def apply_job(view: JobView | None, recorded: RecordedEvent) -> JobView | None:
    """The view after one event of the job's stream; None until the job was requested."""
    if view is not None:
        return _next(view, recorded)
    event = recorded.event
    if isinstance(event, JobRequested):
        return _requested(event, recorded, job_id_of(recorded.stream) or "")
    return None


def _requested(event: JobRequested, recorded: RecordedEvent, job_id: str) -> JobView:
    at = recorded.recorded_at
    position = recorded.position
    return JobView(
        job_id=job_id,
        job_type=_name(event.job_type),
        site_id=_name(event.site_id),
        user_id=_name(event.user_id),
        params_json=_json(event.params),
        metadata_json=_json(event.metadata),
        priority=event.priority,
        max_retries=event.max_retries,
        status="pending",
        created_at=at,
        created_position=position,
        updated_at=at,
        version=recorded.version,
        position=position,
    )


def _next(view: JobView, recorded: RecordedEvent) -> JobView:
    """The view after an event of a requested job.

    Each case builds its view with one `replace` of the fields it changes, plus
    `updated_at`, `version` and `position`; an event the rules ignore falls through to
    the `replace` at the end, which moves only `version` and `position`. The cases are
    ordered by how often they occur (progress first); no two of them match the same
    event, except the two `JobRetried` ones, which keep their order.
    """
    status = view.status
    match recorded.event:
        case JobProgressed(progress=progress, message=message):
            if status == "running":
                return replace(
                    view,
                    progress=0 if progress < 0 else 100 if progress > 100 else progress,
                    progress_message=_name(message),
                    updated_at=recorded.recorded_at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobStarted(worker_id=worker_id, lease_expires_at=lease):
            if status == "pending":
                at = recorded.recorded_at
                return replace(
                    view,
                    status="running",
                    attempt=view.attempt + 1,
                    started_at=at,
                    worker_id=_name(worker_id) if worker_id else None,
                    lease_expires_at=lease,
                    next_attempt_at=None,
                    cancel_requested=False,
                    cancel_requested_by=None,
                    progress=0,
                    progress_message="",
                    updated_at=at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobCompleted(result=result):
            if status not in FINAL:
                at = recorded.recorded_at
                return replace(
                    view,
                    status="completed",
                    completed_at=at,
                    result_json=_json(result),
                    progress=100,
                    error=None,
                    error_code=None,
                    next_attempt_at=None,
                    updated_at=at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobFailed(error_code=code, error_message=message, will_retry=will_retry):
            if status not in FINAL:
                return replace(
                    view,
                    status="pending" if will_retry else "failed",
                    error=message,
                    error_code=_name(code),
                    retry_count=view.retry_count + 1,
                    next_attempt_at=None,
                    updated_at=recorded.recorded_at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobRetried(next_attempt_at=next_at, manual=True):
            if status == "failed":
                return replace(
                    view,
                    status="pending",
                    attempt=0,
                    retry_count=0,
                    cancel_requested=False,
                    cancel_requested_by=None,
                    error=None,
                    error_code=None,
                    next_attempt_at=next_at,
                    progress=0,
                    progress_message="",
                    updated_at=recorded.recorded_at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobRetried(next_attempt_at=next_at):
            if status == "pending":
                return replace(
                    view,
                    next_attempt_at=next_at,
                    updated_at=recorded.recorded_at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobLeaseRenewed(attempt=attempt, lease_expires_at=lease):
            if status == "running" and attempt == view.attempt:
                return replace(
                    view,
                    lease_expires_at=lease,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobCancelRequested(by=by):
            if status == "running" and not view.cancel_requested:
                return replace(
                    view,
                    cancel_requested=True,
                    cancel_requested_by=_name(by),
                    updated_at=recorded.recorded_at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case JobCancelled(by=by):
            if status not in FINAL:
                at = recorded.recorded_at
                return replace(
                    view,
                    status="cancelled",
                    cancelled_at=at,
                    cancelled_by=_name(by),
                    next_attempt_at=None,
                    updated_at=at,
                    version=recorded.version,
                    position=recorded.position,
                )
        case (
            JobRequested()
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
        case _:
            assert_never(recorded.event)
    return replace(view, version=recorded.version, position=recorded.position)


class PrunedJob(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """What stays of a job retention removed: enough to answer 410 to those who saw it."""

    site_id: str
    user_id: str
    job_type: str


class _TableState(msgspec.Struct, array_like=True):
    views: list[JobView]
    pruned: dict[str, PrunedJob] = {}


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_TableState)


class JobTable:
    """Every job's view by job id; owns its dict, so a fold over 100,000s of jobs copies none.

    A `job_pruned` tombstone takes the view out and keeps a `PrunedJob`, so a rebuild
    from a feed whose events of the job are holes ends in the same state as a live fold.
    """

    name = "jobs"

    def __init__(self) -> None:
        self._views: dict[str, JobView] = {}
        self._pruned: dict[str, PrunedJob] = {}

    def apply(self, recorded: RecordedEvent) -> JobView | None:
        """Fold one feed event in; returns the job's new view (None for other streams)."""
        job_id = job_id_of(recorded.stream)
        if job_id is None:
            event = recorded.event
            if isinstance(event, JobPruned):
                self._views.pop(event.job_id, None)
                self._pruned[event.job_id] = PrunedJob(
                    site_id=_name(event.site_id),
                    user_id=_name(event.user_id),
                    job_type=_name(event.job_type),
                )
            return None
        views = self._views
        view = views.get(job_id)
        if view is not None:
            view = _next(view, recorded)
        else:
            # `apply_job(None, recorded)`, with the job id already in hand; the view and
            # the table's key then share one string
            event = recorded.event
            if not isinstance(event, JobRequested):
                return None
            view = _requested(event, recorded, job_id)
        views[job_id] = view
        return view

    def get(self, job_id: str) -> JobView | None:
        return self._views.get(job_id)

    def pruned(self, job_id: str) -> PrunedJob | None:
        """The tombstone of a job retention removed; None for any other id."""
        return self._pruned.get(job_id)

    def __len__(self) -> int:
        return len(self._views)

    def __iter__(self) -> Iterator[JobView]:
        return iter(self._views.values())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, JobTable)
            and self._views == other._views
            and self._pruned == other._pruned
        )

    __hash__ = None  # type: ignore[assignment]

    def dump(self) -> bytes:
        return _ENCODER.encode(_TableState(list(self._views.values()), self._pruned))

    def load(self, data: bytes) -> None:
        state = _DECODER.decode(data)
        self._views = {v.job_id: v for v in state.views}
        self._pruned = state.pruned

    def restore(self, views: dict[str, JobView], pruned: dict[str, PrunedJob]) -> None:
        """Take over views folded elsewhere: a rebuild's `job_rebuild.JobRebuild`."""
        self._views, self._pruned = views, pruned
