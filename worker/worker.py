"""The worker: follows the feed, claims due jobs, runs their handlers, appends the outcome.

    worker = Worker(store, handlers, clock)
    await worker.run()              # follow the feed until cancelled
    await worker.run_once(now)      # tests: start what is due at `now`, wait for it
    await worker.run_burst()        # `--burst`: run what is due, then return

Claiming is appending `started` with the version the worker read: of several workers
(tasks or processes) racing for one job exactly one wins, the others get a conflict and
leave it. The claim carries a lease the attempt renews while its handler runs; a job whose
lease ran out is ended by whichever worker notices first (`WorkerLost`, retried like any
retrying error), and that append fences the old attempt.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from eventstore import EventStore, StorageError, WrongExpectedVersion, streams
from eventstore.events import JobStarted
from projections.jobs import JobView, apply_job, load_job
from projections.runner import ProjectionRunner
from worker.attempt import PROGRESS_INTERVAL, AttemptContext, AttemptRun
from worker.handlers import Handlers, JobError, Retry
from worker.metrics import WorkerMetrics
from worker.outcomes import (
    Cancelled,
    Failed,
    Outcome,
    Succeeded,
    outcome_events,
    worker_lost,
)
from worker.queue import WorkQueue

log = logging.getLogger("jobtrail.worker")

SHUTDOWN_GRACE = 2.0
"""Seconds a stopping worker spends handing its running jobs back."""

STORE_RETRY = timedelta(seconds=1)
"""How soon a claim or takeover the store refused is tried again."""

IDLE_RESCAN = 1.0
"""Seconds the loop sleeps at most with nothing timed: a backstop, the feed wakes it."""


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a worker runs: slots, lease and retry timing (`JOBTRAIL_*` settings)."""

    concurrency: int = 4
    lease_seconds: float = 60.0
    retry_base_delay: float = 30.0


def new_worker_id() -> str:
    """host:pid:random, unique per worker, readable in a job's `started` events."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs the store's due jobs with `handlers`, `config.concurrency` at a time."""

    def __init__(
        self,
        store: EventStore,
        handlers: Handlers,
        clock: Callable[[], datetime],
        config: WorkerConfig | None = None,
        *,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        config = config or WorkerConfig()
        if config.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.handlers = handlers
        self.clock = clock
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self.metrics = metrics or WorkerMetrics()
        self._rng = rng or random.Random()
        self.queue = WorkQueue(
            handlers.types, on_change=self._wake, on_cancel_requested=self._cancel_requested
        )
        self.runner = ProjectionRunner(store, [self.queue])
        self._busy: set[str] = set()
        self._runs: dict[str, AttemptRun] = {}
        self._taking: set[str] = set()
        self._woken = anyio.Event()

    # -- the loops -------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the feed and run due jobs until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.runner.run)
            tg.start_soon(self._housekeeping)
            task_status.started()
            while True:
                self._woken = anyio.Event()
                now = self.clock()
                self._dispatch(tg, now)
                await self._sleep(now)

    async def run_once(self, now: datetime | None = None) -> int:
        """Catch up, start what is due at `now` (up to the concurrency), wait for all of it.

        Returns how many attempts and takeovers it ran.
        """
        await self.runner.catch_up()
        count = 0
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._housekeeping)
            async with anyio.create_task_group() as tg:
                count = self._dispatch(tg, now or self.clock())
            outer.cancel_scope.cancel()
        await self.runner.catch_up()
        return count

    async def run_burst(self) -> int:
        """Run what is due until nothing is left, then return how much ran."""
        total = 0
        while ran := await self.run_once():
            total += ran
        return total

    def _dispatch(self, tg: TaskGroup, now: datetime) -> int:
        count = 0
        for lost in list(self.queue.expired(now, own=self._busy | self._taking)):
            self._taking.add(lost.job_id)
            tg.start_soon(self._take_over, lost)
            count += 1
        while len(self._busy) < self.config.concurrency:
            view = self.queue.next_ready(now, skip=self._busy)
            if view is None:
                break
            self._busy.add(view.job_id)
            tg.start_soon(self._attempt, view)
            count += 1
        return count

    async def _sleep(self, now: datetime) -> None:
        wakeup = self.queue.next_wakeup()
        timeout = IDLE_RESCAN
        if wakeup is not None:
            timeout = min(timeout, max(0.0, (wakeup - now).total_seconds()))
        with anyio.move_on_after(timeout):
            await self._woken.wait()

    async def _housekeeping(self) -> None:
        """Renew the leases and append the progress of every running attempt, as due."""
        async with anyio.create_task_group() as tg:
            while True:
                await anyio.sleep(PROGRESS_INTERVAL)
                now = anyio.current_time()
                for run in self._runs.values():
                    if run.ctx.has_progress:
                        tg.start_soon(_quietly, run.report_progress)
                    if run.lease_due(now):
                        tg.start_soon(_quietly, run.renew_lease)

    def _wake(self) -> None:
        self._woken.set()

    def _cancel_requested(self, view: JobView) -> None:
        run = self._runs.get(view.job_id)
        if run is not None and run.attempt == view.attempt:
            run.request_cancel(view.cancel_requested_by or "system")

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(self, view: JobView) -> None:
        run = None
        try:
            run = await self._claim(view)
            if run is not None:
                self._runs[view.job_id] = run
                await self._finish(run, await self._run_handler(run))
        except anyio.get_cancelled_exc_class():
            # The worker is stopping: hand the job back at once (also when the claim landed
            # but its answer was cut off).
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE):
                run = run or await self._claimed(view)
                if run is not None:
                    await self._release(run)
            raise
        except StorageError as exc:
            if run is None:  # the claim: nothing was appended, offer the job again soon
                log.error("job %s: the store refused the claim: %s", view.job_id, exc)
                self.queue.requeue(view, self.clock() + STORE_RETRY)
            else:  # nothing was acknowledged; the lease runs out and a worker takes over
                log.error("job %s: the store refused an append: %s", view.job_id, exc)
        finally:
            self._runs.pop(view.job_id, None)
            self._busy.discard(view.job_id)
            self._wake()

    async def _claim(self, view: JobView) -> AttemptRun | None:
        now = self.clock()
        started = JobStarted(
            attempt=view.attempt + 1,
            worker_id=self.worker_id,
            lease_expires_at=now + timedelta(seconds=self.config.lease_seconds),
        )
        try:
            (recorded,) = await self.store.append(streams.job(view.job_id), [started], view.version)
        except WrongExpectedVersion:
            self.metrics.claims_lost.inc()
            return None  # another worker won it, or it was cancelled meanwhile
        claimed = apply_job(view, recorded)
        assert claimed is not None
        self.metrics.started.inc()
        self.metrics.pickup.observe(max(0.0, (now - view.updated_at).total_seconds()))
        log.info(
            "job %s type=%s site=%s attempt=%d started",
            view.job_id,
            view.job_type,
            view.site_id,
            claimed.attempt,
        )
        return AttemptRun(
            self.store, claimed, recorded.version, self.config.lease_seconds, self.clock
        )

    async def _run_handler(self, run: AttemptRun) -> tuple[Outcome, float]:
        view = run.view
        handler = self.handlers.get(view.job_type)
        assert handler is not None, "the queue holds only job types this worker handles"
        outcome: Outcome | None = None
        began = time.perf_counter()
        with run.scope:
            outcome = await _call(handler, run.ctx, view)
        if outcome is None:
            outcome = Cancelled(by=run.cancel_by or "system")
        return outcome, time.perf_counter() - began

    async def _finish(self, run: AttemptRun, ran: tuple[Outcome, float]) -> None:
        outcome, seconds = ran
        ctx = run.ctx
        if run.fenced:
            self.metrics.fenced.inc()
            log.warning("job %s attempt %d: result dropped, taken over", run.job_id, run.attempt)
            return
        events = outcome_events(
            run.view, outcome, self.clock(), self.config.retry_base_delay, self._rng
        )
        latest = ctx.take_progress()
        also = ctx.also_on_success if isinstance(outcome, Succeeded) else []
        if not await run.append([*([latest] if latest else []), *events], also, final=True):
            self.metrics.fenced.inc()
            return
        self._log_end(run.view, events[0], seconds)
        self.metrics.finished.labels(type(events[0]).__struct_config__.tag).inc()
        self.metrics.duration.observe(seconds)

    def _log_end(self, view: JobView, event: object, seconds: float) -> None:
        tag = type(event).__struct_config__.tag  # type: ignore[attr-defined]
        code = getattr(event, "error_code", None)
        log.info(
            "job %s type=%s site=%s attempt=%d %s%s in %.3f s",
            view.job_id,
            view.job_type,
            view.site_id,
            view.attempt,
            tag,
            f" ({code})" if code else "",
            seconds,
        )

    async def _claimed(self, view: JobView) -> AttemptRun | None:
        """The attempt this worker claimed on `view`, if its claim landed after all."""
        now = await load_job(self.store, view.job_id)
        if (
            now is None
            or now.status != "running"
            or now.attempt != view.attempt + 1
            or now.worker_id != self.worker_id
        ):
            return None
        return AttemptRun(self.store, now, now.version, self.config.lease_seconds, self.clock)

    async def _release(self, run: AttemptRun) -> None:
        """Record the attempt as lost to a shutdown, due again now: no waiting for the lease."""
        stopped = Failed(
            code="WorkerLost",
            message=f"The worker running attempt {run.attempt} was stopped.",
            retryable=True,
            delay=0.0,
        )
        events = outcome_events(
            run.view, stopped, self.clock(), self.config.retry_base_delay, self._rng
        )
        try:
            if await run.append(events, final=True):
                log.info("job %s attempt %d handed back: the worker stops", run.job_id, run.attempt)
        except StorageError as exc:
            log.error("job %s: hand-back not recorded, its lease will run out: %s", run.job_id, exc)

    async def _take_over(self, view: JobView) -> None:
        """End an attempt whose lease ran out: cancelled if asked for, else `WorkerLost`."""
        outcome: Outcome = (
            Cancelled(by=view.cancel_requested_by or "system")
            if view.cancel_requested
            else worker_lost(view)
        )
        events = outcome_events(
            view, outcome, self.clock(), self.config.retry_base_delay, self._rng
        )
        try:
            await self.store.append(streams.job(view.job_id), events, view.version)
        except WrongExpectedVersion:
            # Its worker renewed the lease, another worker took it over first, or a late
            # event of the attempt moved the version: that event re-arms the lease check.
            return
        except StorageError as exc:
            log.error("job %s: takeover not recorded: %s", view.job_id, exc)
            self.queue.recheck_lease(view, self.clock() + STORE_RETRY)
            return
        finally:
            self._taking.discard(view.job_id)
            self._wake()
        self.metrics.takeovers.inc()
        log.warning(
            "job %s type=%s site=%s attempt=%d lease ran out (worker %s): taken over",
            view.job_id,
            view.job_type,
            view.site_id,
            view.attempt,
            view.worker_id,
        )


async def _call(handler: object, ctx: AttemptContext, view: JobView) -> Outcome:
    """Run the handler; map what it returns or raises to an outcome (never raises)."""
    try:
        result = await handler(ctx, view.params)  # type: ignore[operator]
    except JobError as exc:
        return Failed(code=exc.code, message=exc.message, retryable=exc.retryable)
    except Retry as exc:
        return Failed(
            code="RetryRequested",
            message=f"The handler asked for a retry in {exc.delay:g} s.",
            retryable=True,
            delay=exc.delay,
        )
    except Exception as exc:
        log.exception("job %s attempt %d: the handler raised", view.job_id, ctx.attempt)
        return Failed(code="ProcessingError", message=_message(exc), retryable=True)
    try:
        msgspec.json.encode(result)
    except (TypeError, ValueError, OverflowError) as exc:
        return Failed(
            code="ProcessingError",
            message=f"The handler's result cannot be stored as JSON: {exc}",
            retryable=True,
        )
    return Succeeded(result=result)


async def _quietly(step: Callable[[], Awaitable[None]]) -> None:
    """A housekeeping append: a store error is logged; the attempt's own end will tell."""
    try:
        await step()
    except StorageError as exc:
        log.error("a lease renewal or progress append failed: %s", exc)


def _message(exc: BaseException) -> str:
    """The error message a client sees: the exception's text, never a stack trace."""
    text = str(exc).strip() or type(exc).__name__
    return text[:2000]
