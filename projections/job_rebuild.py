"""A rebuild's fold of every job at once: the job table's rules, on mutable drafts.

The live fold (`jobs._next`) builds a new frozen `JobView` per event, which the service
needs: every view it hands out must stay as it was. A rebuild (`jobtrail replay`) hands
out nothing until the end, so here each job is a plain list in `JobView`'s field order,
changed in place, and its view is built once (`msgspec.convert`, when it ends). The rules are
those of `jobs._next` and `JobTable.apply`, case for case (same guards, same fields, the
same interned strings); tests/projections/test_job_rebuild.py folds many generated
histories both ways and requires equal tables.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Final

import msgspec

from eventstore.events import (
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
)
from eventstore.records import RecordedEvent
from projections.jobs import FINAL, JobTable, JobView, PrunedJob, _json, _name, _next

_AT: Final = {name: i for i, name in enumerate(JobView.__struct_fields__)}
"""A draft's index of each `JobView` field (the draft is the view's array form)."""

STATUS: Final = _AT["status"]
STARTED_AT: Final = _AT["started_at"]
COMPLETED_AT: Final = _AT["completed_at"]
CANCELLED_AT: Final = _AT["cancelled_at"]
CANCELLED_BY: Final = _AT["cancelled_by"]
PROGRESS: Final = _AT["progress"]
PROGRESS_MESSAGE: Final = _AT["progress_message"]
RESULT_JSON: Final = _AT["result_json"]
ERROR: Final = _AT["error"]
ERROR_CODE: Final = _AT["error_code"]
ATTEMPT: Final = _AT["attempt"]
RETRY_COUNT: Final = _AT["retry_count"]
NEXT_ATTEMPT_AT: Final = _AT["next_attempt_at"]
WORKER_ID: Final = _AT["worker_id"]
LEASE_EXPIRES_AT: Final = _AT["lease_expires_at"]
UPDATED_AT: Final = _AT["updated_at"]
VERSION: Final = _AT["version"]
POSITION: Final = _AT["position"]
CANCEL_REQUESTED: Final = _AT["cancel_requested"]
CANCEL_REQUESTED_BY: Final = _AT["cancel_requested_by"]


def _draft(event: JobRequested, recorded: RecordedEvent, job_id: str) -> list[Any]:
    """`jobs._requested` as a draft: every field of a new view, in `JobView`'s order."""
    at, position = recorded.recorded_at, recorded.position
    return [
        job_id,
        _name(event.job_type),
        _name(event.site_id),
        _name(event.user_id),
        _json(event.params),
        _json(event.metadata),
        event.priority,
        event.max_retries,
        "pending",
        at,  # created_at
        position,  # created_position
        at,  # updated_at
        None,  # started_at
        None,  # completed_at
        None,  # cancelled_at
        None,  # cancelled_by
        0,  # progress
        "",  # progress_message
        b"null",  # result_json
        None,  # error
        None,  # error_code
        0,  # attempt
        0,  # retry_count
        None,  # next_attempt_at
        None,  # worker_id
        None,  # lease_expires_at
        recorded.version,
        position,
        False,  # cancel_requested
        None,  # cancel_requested_by
    ]


class JobRebuild:
    """Folds a feed from its start; `finish` puts the views into a `JobTable`.

    A projection for `feedscan.folder` while it folds (named "jobs", every event type).
    A job not final yet is a draft; one that ends (completed, failed, cancelled) becomes
    its `JobView` there and then, while its draft is still in the cache, and the few
    events a final job still gets go through the live fold, `jobs._next`, itself. The
    drafts' dict stays as small as the jobs in flight: most lookups miss no cache.
    """

    name = "jobs"

    def __init__(self) -> None:
        # both by stream name: no job id sliced per event
        self._drafts: dict[str, list[Any]] = {}
        self._ended: dict[str, JobView] = {}
        self._pruned: dict[str, PrunedJob] = {}

    def apply(self, recorded: RecordedEvent) -> None:
        """`JobTable.apply`, on the job's draft; the cases in order of how often they occur."""
        stream = recorded.stream
        draft = self._drafts.get(stream)
        event = recorded.event
        if draft is None:
            self._apply_other(stream, event, recorded)
            return
        draft[VERSION] = recorded.version  # every case moves both; none reads them
        draft[POSITION] = recorded.position
        status = draft[STATUS]
        if type(event) is JobProgressed:
            if status == "running":
                progress = event.progress
                draft[PROGRESS] = 0 if progress < 0 else 100 if progress > 100 else progress
                draft[PROGRESS_MESSAGE] = _name(event.message)
                draft[UPDATED_AT] = recorded.recorded_at
        elif type(event) is JobStarted:
            if status == "pending":
                _start(draft, event, recorded)
        elif type(event) is JobCompleted:
            if status not in FINAL:
                at = recorded.recorded_at
                draft[STATUS] = "completed"
                draft[COMPLETED_AT] = at
                draft[RESULT_JSON] = _json(event.result)
                draft[PROGRESS] = 100
                draft[ERROR] = draft[ERROR_CODE] = draft[NEXT_ATTEMPT_AT] = None
                draft[UPDATED_AT] = at
                self._end(stream, draft)
        elif _rare(draft, event, recorded):
            self._end(stream, draft)

    def _apply_other(self, stream: str, event: object, recorded: RecordedEvent) -> None:
        """An event of an ended job, of a job not requested yet, or of another stream."""
        if not stream.startswith("job:"):
            if isinstance(event, JobPruned):
                self._prune(event)
            return
        view = self._ended.get(stream)
        if view is not None:
            self._ended[stream] = _next(view, recorded)  # the live fold: rare, so plain
        elif type(event) is JobRequested:
            self._drafts[stream] = _draft(event, recorded, stream[4:])

    def _end(self, stream: str, draft: list[Any]) -> None:
        del self._drafts[stream]
        self._ended[stream] = msgspec.convert(draft, JobView)

    def _prune(self, event: JobPruned) -> None:
        stream = "job:" + event.job_id
        self._drafts.pop(stream, None)
        self._ended.pop(stream, None)
        self._pruned[event.job_id] = PrunedJob(
            site_id=_name(event.site_id),
            user_id=_name(event.user_id),
            job_type=_name(event.job_type),
        )

    def finish(self, table: JobTable) -> None:
        """Give `table` the folded views and tombstones (and start over empty).

        In the live table's order: a view goes in at its job's `requested`, so by
        `created_position`.
        """
        drafted = msgspec.convert(list(self._drafts.values()), list[JobView])
        views = [*self._ended.values(), *drafted]
        views.sort(key=_CREATED)
        table.restore({v.job_id: v for v in views}, self._pruned)
        self._drafts, self._ended, self._pruned = {}, {}, {}


_CREATED: Final = attrgetter("created_position")


def _start(draft: list[Any], event: JobStarted, recorded: RecordedEvent) -> None:
    at = recorded.recorded_at
    draft[STATUS] = "running"
    draft[ATTEMPT] += 1
    draft[STARTED_AT] = at
    draft[WORKER_ID] = _name(event.worker_id) if event.worker_id else None
    draft[LEASE_EXPIRES_AT] = event.lease_expires_at
    draft[NEXT_ATTEMPT_AT] = None
    draft[CANCEL_REQUESTED] = False
    draft[CANCEL_REQUESTED_BY] = None
    draft[PROGRESS] = 0
    draft[PROGRESS_MESSAGE] = ""
    draft[UPDATED_AT] = at


def _rare(draft: list[Any], event: object, recorded: RecordedEvent) -> bool:
    """The less common cases of `jobs._next`: whether the job ended.

    Other events change only version and position (set already).
    """
    status = draft[STATUS]
    if isinstance(event, JobFailed):
        if status not in FINAL:
            draft[STATUS] = "pending" if event.will_retry else "failed"
            draft[ERROR] = event.error_message
            draft[ERROR_CODE] = _name(event.error_code)
            draft[RETRY_COUNT] += 1
            draft[NEXT_ATTEMPT_AT] = None
            draft[UPDATED_AT] = recorded.recorded_at
            return not event.will_retry
    elif isinstance(event, JobRetried):
        if event.manual == True:  # noqa: E712 - as `_next`'s pattern `manual=True` compares
            if status == "failed":
                draft[STATUS] = "pending"
                draft[ATTEMPT] = draft[RETRY_COUNT] = 0
                draft[CANCEL_REQUESTED] = False
                draft[CANCEL_REQUESTED_BY] = draft[ERROR] = draft[ERROR_CODE] = None
                draft[NEXT_ATTEMPT_AT] = event.next_attempt_at
                draft[PROGRESS] = 0
                draft[PROGRESS_MESSAGE] = ""
                draft[UPDATED_AT] = recorded.recorded_at
        elif status == "pending":
            draft[NEXT_ATTEMPT_AT] = event.next_attempt_at
            draft[UPDATED_AT] = recorded.recorded_at
    elif isinstance(event, JobLeaseRenewed):
        if status == "running" and event.attempt == draft[ATTEMPT]:
            draft[LEASE_EXPIRES_AT] = event.lease_expires_at
    elif isinstance(event, JobCancelRequested):
        if status == "running" and not draft[CANCEL_REQUESTED]:
            draft[CANCEL_REQUESTED] = True
            draft[CANCEL_REQUESTED_BY] = _name(event.by)
            draft[UPDATED_AT] = recorded.recorded_at
    elif isinstance(event, JobCancelled):
        if status not in FINAL:
            at = recorded.recorded_at
            draft[STATUS] = "cancelled"
            draft[CANCELLED_AT] = at
            draft[CANCELLED_BY] = _name(event.by)
            draft[NEXT_ATTEMPT_AT] = None
            draft[UPDATED_AT] = at
            return True
    return False
