"""One attempt of one job: the handler, its lease, its progress, and the fenced appends.

Every append of the attempt names the job stream's version this worker last saw. Anything
appended by someone else moves the version: a `cancel_requested` (the attempt re-reads the
job, sees it is still its own, asks the handler to stop and carries on) or a takeover after
the lease ran out (the job is no longer this attempt's: the attempt is fenced, its handler
is stopped and nothing more of it is appended). So a result is recorded at most once, by
the attempt that still holds the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Final

import anyio

from eventstore import AppendTo, EventStore, StorageError, WrongExpectedVersion, new, streams
from eventstore.events import Event, JobLeaseRenewed, JobProgressed
from projections.jobs import JobView, load_job

log = logging.getLogger("jobtrail.worker")

CONFLICT_RETRIES: Final = 20
PROGRESS_INTERVAL: Final = 0.25
"""Seconds between two `progressed` events of one attempt; what comes between coalesces.

Also how often the worker looks for leases to renew and progress to append, for all its
attempts at once: no task of its own per attempt."""


class AttemptContext:
    """What a handler gets (`JobContext`): the job's id and attempt, and `progress`.

    `progress` only records the latest value and returns; the worker appends it at most
    every `PROGRESS_INTERVAL` seconds, and the latest always lands (with the outcome at
    the latest). `also_on_success` lets a built-in handler add events to other streams
    that land in the same append as `completed`.
    """

    def __init__(self, view: JobView, attempt: int) -> None:
        self.job_id = view.job_id
        self.attempt = attempt
        self.job = view
        self.also_on_success: list[AppendTo] = []
        self._latest: JobProgressed | None = None

    async def progress(self, percent: int, message: str = "") -> None:
        percent = max(0, min(100, int(percent)))
        self._latest = JobProgressed(progress=percent, message=str(message)[:1000])

    def take_progress(self) -> JobProgressed | None:
        latest, self._latest = self._latest, None
        return latest

    @property
    def has_progress(self) -> bool:
        return self._latest is not None


class AttemptRun:
    """The appends of one claimed attempt, serialized and fenced by the version last seen."""

    def __init__(
        self,
        store: EventStore,
        view: JobView,
        version: int,
        lease: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.view = view
        self.job_id = view.job_id
        self.attempt = view.attempt
        self.stream = streams.job(view.job_id)
        self.version = version
        self.lease = lease
        self.clock = clock
        self.fenced = False
        self.ended = False
        self.cancel_by: str | None = None
        self.scope = anyio.CancelScope()
        self.ctx = AttemptContext(view, self.attempt)
        self.renewed_at = anyio.current_time()
        self._appending = anyio.Lock()

    def request_cancel(self, by: str) -> None:
        """Stop the handler: the job was asked to stop (by a user) or is not ours (fenced)."""
        if self.cancel_by is None:
            self.cancel_by = by
        self.scope.cancel()

    async def append(
        self, events: Sequence[Event], also: Sequence[AppendTo] = (), *, final: bool = False
    ) -> bool:
        """Append to the job (and `also`) if it is still this attempt's; False once fenced.

        A `final` append (the outcome, or the hand-back) ends the attempt: a lease renewal
        or progress report waiting for the lock meanwhile then appends nothing, so nothing
        of the attempt ever lands after its last event.
        """
        async with self._appending:
            for _ in range(CONFLICT_RETRIES):
                if self.fenced or self.ended:
                    return False
                batch = [AppendTo(self.stream, [new(e) for e in events], self.version), *also]
                try:
                    recorded = await self.store.append_many(batch)
                except WrongExpectedVersion:
                    await self._reread()
                    continue
                self.version = recorded[0][-1].version
                self.ended = final
                return True
            raise StorageError(f"job {self.job_id} kept changing under attempt {self.attempt}")

    async def _reread(self) -> None:
        view = await load_job(self.store, self.job_id)
        if view is None or view.status != "running" or view.attempt != self.attempt:
            self.fenced = True
            self.scope.cancel()
            now = "gone" if view is None else f"{view.status}, attempt {view.attempt}"
            log.warning(
                "job %s attempt %d is no longer this worker's (now %s); stopping it",
                self.job_id,
                self.attempt,
                now,
            )
            return
        self.version = view.version
        self.view = view
        if view.cancel_requested:
            self.request_cancel(view.cancel_requested_by or "system")

    def lease_due(self, now: float) -> bool:
        """Whether a third of the lease passed since the last renewal (monotonic seconds)."""
        return now - self.renewed_at >= self.lease / 3

    async def renew_lease(self) -> None:
        """Move the lease on by its length from now (nothing once fenced)."""
        self.renewed_at = anyio.current_time()
        until: datetime = self.clock() + timedelta(seconds=self.lease)
        await self.append([JobLeaseRenewed(attempt=self.attempt, lease_expires_at=until)])

    async def report_progress(self) -> None:
        """Append the handler's latest progress, if it reported any since the last time."""
        latest = self.ctx.take_progress()
        if latest is not None:
            await self.append([latest])
