"""The worker on a real store, stepped with `run_once(now)` or run live.

Histories are read back from the job's own stream, as `jobtrail audit` shows them.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import NO_STREAM, EventStore, new, streams
from eventstore.events import JobFailed, JobProgressed, JobRequested, JobRetried, event_type
from eventstore.filestore import open_file_store
from eventstore.memory import MemoryStore
from projections.jobs import JobView, load_job
from service.auth import Principal
from service.commands import cancel_job, new_job_id, retry_job
from worker import Fail, Handlers, JobContext, Retry
from worker.worker import Worker, WorkerConfig

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ADMIN = Principal("site1", "admin1", "admin")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(params=["memory", "file"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    async with open_file_store(tmp_path / "data") as file_store:
        yield file_store


async def submit(
    store: EventStore,
    job_type: str,
    params: dict[str, Any] | None = None,
    *,
    site: str = "site1",
    priority: int = 0,
    max_retries: int = 3,
) -> str:
    job_id = new_job_id()
    event = JobRequested(
        job_type=job_type,
        site_id=site,
        user_id="user1",
        params=params or {},
        priority=priority,
        max_retries=max_retries,
    )
    await store.append(streams.job(job_id), [new(event)], NO_STREAM)
    return job_id


async def history(store: EventStore, job_id: str) -> list[str]:
    return [event_type(e.event) for e in await store.read_stream(streams.job(job_id))]


async def job(store: EventStore, job_id: str) -> JobView:
    view = await load_job(store, job_id)
    assert view is not None
    return view


async def status_becomes(store: EventStore, job_id: str, status: str) -> JobView:
    """The job once it has `status`, polled from its stream (within 5 s)."""
    with anyio.fail_after(5):
        while True:
            view = await job(store, job_id)
            if view.status == status:
                return view
            await anyio.sleep(0.01)


def make_worker(
    store: EventStore,
    handlers: Handlers,
    clock: Callable[[], datetime],
    **config: Any,
) -> Worker:
    settings = {"concurrency": 4, "lease_seconds": 30.0, "retry_base_delay": 10.0, **config}
    return Worker(store, handlers, clock, WorkerConfig(**settings), rng=random.Random(7))


def basic_handlers() -> Handlers:
    handlers = Handlers()

    @handlers.job("echo")
    async def echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"echo": params, "attempt": ctx.attempt}

    @handlers.job("broken")
    async def broken(ctx: JobContext, params: dict[str, Any]) -> None:
        raise RuntimeError("the disk is on fire")

    @handlers.job("refuse")
    async def refuse(ctx: JobContext, params: dict[str, Any]) -> None:
        raise Fail("BadInput", "params are not acceptable")

    @handlers.job("later")
    async def later(ctx: JobContext, params: dict[str, Any]) -> None:
        raise Retry(120)

    @handlers.job("unstorable")
    async def unstorable(ctx: JobContext, params: dict[str, Any]) -> object:
        return object()

    return handlers


async def test_a_job_completes_with_its_result(store: EventStore) -> None:
    job_id = await submit(store, "echo", {"n": 1})
    worker = make_worker(store, basic_handlers(), Clock())
    assert await worker.run_burst() == 1
    assert await history(store, job_id) == ["requested", "started", "completed"]
    view = await job(store, job_id)
    assert view.status == "completed"
    assert view.result == {"echo": {"n": 1}, "attempt": 1}
    assert view.progress == 100


async def test_a_retrying_error_gives_the_history_api_md_describes(store: EventStore) -> None:
    clock = Clock()
    job_id = await submit(store, "broken")
    worker = make_worker(store, basic_handlers(), clock)
    waits = []
    for _ in range(3):
        assert await worker.run_once() == 1
        view = await job(store, job_id)
        if view.next_attempt_at is not None:
            waits.append((view.next_attempt_at - clock.now).total_seconds())
            assert await worker.run_once(clock.now + timedelta(seconds=1)) == 0  # not yet due
            clock.now = view.next_attempt_at
    assert await history(store, job_id) == [
        "requested",
        *["started", "failed", "retried"] * 2,
        "started",
        "failed",
    ]
    view = await job(store, job_id)
    assert (view.status, view.error_code, view.retry_count) == ("failed", "ProcessingError", 3)
    assert view.error == "the disk is on fire"
    assert not view.can_retry
    # backoff doubles from the base delay (10 s), with at most 10% jitter on top
    assert 10 <= waits[0] <= 11 and 20 <= waits[1] <= 22


async def test_fail_ends_the_round_and_leaves_it_retryable(store: EventStore) -> None:
    job_id = await submit(store, "refuse")
    worker = make_worker(store, basic_handlers(), Clock())
    await worker.run_burst()
    assert await history(store, job_id) == ["requested", "started", "failed"]
    view = await job(store, job_id)
    assert (view.status, view.error_code, view.error) == (
        "failed",
        "BadInput",
        "params are not acceptable",
    )
    assert view.can_retry and view.retry_count == 1


async def test_retry_asks_for_another_attempt_after_its_delay(store: EventStore) -> None:
    clock = Clock()
    job_id = await submit(store, "later")
    worker = make_worker(store, basic_handlers(), clock)
    await worker.run_once()
    events = await store.read_stream(streams.job(job_id))
    failed, retried = events[-2].event, events[-1].event
    assert isinstance(failed, JobFailed) and failed.error_code == "RetryRequested"
    assert isinstance(retried, JobRetried) and retried.next_attempt_at == T0 + timedelta(
        seconds=120
    )
    assert await worker.run_once(T0 + timedelta(seconds=119)) == 0
    assert await worker.run_once(T0 + timedelta(seconds=120)) == 1


async def test_a_result_that_is_not_json_fails_the_attempt(store: EventStore) -> None:
    job_id = await submit(store, "unstorable", max_retries=1)
    await make_worker(store, basic_handlers(), Clock()).run_burst()
    view = await job(store, job_id)
    assert (view.status, view.error_code) == ("failed", "ProcessingError")


async def test_a_manual_retry_starts_a_new_round(store: EventStore) -> None:
    clock = Clock()
    job_id = await submit(store, "refuse", max_retries=2)
    worker = make_worker(store, basic_handlers(), clock)
    await worker.run_burst()
    assert (await job(store, job_id)).can_retry
    await retry_job(store, ADMIN, job_id, clock)
    assert await worker.run_burst() == 1
    assert await history(store, job_id) == [
        "requested",
        "started",
        "failed",
        "retried",
        "started",
        "failed",
    ]
    view = await job(store, job_id)
    assert (view.attempt, view.retry_count) == (1, 1)


async def test_priority_first_then_oldest(store: EventStore) -> None:
    order: list[str] = []
    handlers = Handlers()

    @handlers.job("track")
    async def track(ctx: JobContext, params: dict[str, Any]) -> None:
        order.append(params["name"])

    for name, priority in [("old-low", 0), ("high", 5), ("new-low", 0), ("urgent", 10)]:
        await submit(store, "track", {"name": name}, priority=priority)
    await make_worker(store, handlers, Clock(), concurrency=1).run_burst()
    assert order == ["urgent", "high", "old-low", "new-low"]


async def test_one_sites_backlog_does_not_starve_another_site(store: EventStore) -> None:
    order: list[str] = []
    handlers = Handlers()

    @handlers.job("track")
    async def track(ctx: JobContext, params: dict[str, Any]) -> None:
        order.append(params["site"])

    for _ in range(60):
        await submit(store, "track", {"site": "busy"}, site="busy")
    await submit(store, "track", {"site": "quiet"}, site="quiet")
    worker = make_worker(store, handlers, Clock(), concurrency=1)
    for _ in range(3):
        await worker.run_once()
    assert "quiet" in order[:2]


async def test_a_worker_leaves_job_types_it_does_not_handle(store: EventStore) -> None:
    job_id = await submit(store, "somebody_elses")
    assert await make_worker(store, basic_handlers(), Clock()).run_burst() == 0
    assert await history(store, job_id) == ["requested"]


async def test_progress_is_coalesced_and_the_latest_value_lands(store: EventStore) -> None:
    handlers = Handlers()

    @handlers.job("chatty")
    async def chatty(ctx: JobContext, params: dict[str, Any]) -> str:
        for i in range(1, 2001):
            await ctx.progress(i // 20, f"step {i}")
            if i % 100 == 0:
                await anyio.sleep(0.01)
        return "done"

    job_id = await submit(store, "chatty")
    await make_worker(store, handlers, Clock()).run_burst()
    events = [e.event for e in await store.read_stream(streams.job(job_id))]
    progressed = [e for e in events if isinstance(e, JobProgressed)]
    assert 1 <= len(progressed) <= 10, len(progressed)
    assert progressed[-1] == JobProgressed(progress=100, message="step 2000")
    assert event_type(events[-1]) == "completed"


async def test_a_dead_workers_job_is_taken_over_and_the_old_attempt_fenced(
    store: EventStore,
) -> None:
    clock = Clock()
    release = anyio.Event()
    runs: list[int] = []
    handlers = Handlers()

    @handlers.job("slow")
    async def slow(ctx: JobContext, params: dict[str, Any]) -> int:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            with anyio.CancelScope(shield=True):
                await release.wait()  # stalls, then tries to record its result
        return ctx.attempt

    job_id = await submit(store, "slow")
    stalled = make_worker(store, handlers, clock, lease_seconds=3600)
    rescuer = make_worker(store, handlers, clock, lease_seconds=3600, retry_base_delay=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stalled.run_once)
        await status_becomes(store, job_id, "running")
        # The lease runs out: the rescuer ends attempt 1 (WorkerLost) and runs attempt 2.
        assert await rescuer.run_once(clock.advance(3601)) == 1
        assert await rescuer.run_once(clock.advance(1)) == 1
        release.set()
    assert runs == [1, 2]
    assert await history(store, job_id) == [
        "requested",
        "started",
        "failed",
        "retried",
        "started",
        "completed",
    ]
    view = await job(store, job_id)
    assert view.result == 2  # attempt 1's result was rejected
    lost = (await store.read_stream(streams.job(job_id)))[2].event
    assert isinstance(lost, JobFailed) and lost.error_code == "WorkerLost" and lost.will_retry


async def test_cancelling_a_running_job_stops_its_handler_within_a_second(
    store: EventStore,
) -> None:
    stopped = anyio.Event()
    handlers = Handlers()

    @handlers.job("forever")
    async def forever(ctx: JobContext, params: dict[str, Any]) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    job_id = await submit(store, "forever")
    worker = make_worker(store, handlers, lambda: datetime.now(UTC))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await status_becomes(store, job_id, "running")
        await cancel_job(store, ADMIN, job_id)
        with anyio.fail_after(1):
            await stopped.wait()
            await status_becomes(store, job_id, "cancelled")
        tg.cancel_scope.cancel()
    assert await history(store, job_id) == ["requested", "started", "cancel_requested", "cancelled"]
    assert (await job(store, job_id)).cancelled_by == "admin1"


async def test_a_live_worker_picks_up_new_jobs_and_retries_on_time(store: EventStore) -> None:
    handlers = basic_handlers()
    worker = make_worker(store, handlers, lambda: datetime.now(UTC), retry_base_delay=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        done = await submit(store, "echo", {"live": True})
        retried = await submit(store, "broken", max_retries=2)
        await status_becomes(store, done, "completed")
        await status_becomes(store, retried, "failed")
        tg.cancel_scope.cancel()
    events = await store.read_stream(streams.job(retried))
    assert [event_type(e.event) for e in events] == [
        "requested",
        "started",
        "failed",
        "retried",
        "started",
        "failed",
    ]
    # the retry was picked up at its time (0.2-0.22 s), not at a rescan
    assert events[4].recorded_at - events[3].recorded_at < timedelta(seconds=0.6)


async def test_a_stopping_worker_hands_its_running_jobs_back_at_once(store: EventStore) -> None:
    handlers = Handlers()

    @handlers.job("forever")
    async def forever(ctx: JobContext, params: dict[str, Any]) -> None:
        await anyio.sleep_forever()

    job_id = await submit(store, "forever")
    worker = make_worker(store, handlers, lambda: datetime.now(UTC), lease_seconds=3600)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await status_becomes(store, job_id, "running")
        tg.cancel_scope.cancel()
    assert await history(store, job_id) == ["requested", "started", "failed", "retried"]
    view = await job(store, job_id)
    assert view.status == "pending" and view.error_code == "WorkerLost"
    assert view.next_attempt_at is not None
    assert view.next_attempt_at - view.updated_at < timedelta(seconds=1)  # not after the lease
