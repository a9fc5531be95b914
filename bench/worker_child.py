"""The worker benchmark's jobtrail client: `python -m bench.worker_child ROLE --data DIR ...`.

A client process beside one `jobtrail worker` on the same data directory. It creates jobs
the way a client does (one `append` of a `JobRequested` to a new job stream, expected
version NO_STREAM, per job) and sees them finish by following the feed.

burst   submit one warm-up job and wait for it (the worker is up), say `ready`; on `go`,
        submit JOBS jobs from TASKS concurrent tasks as fast as they go, and report the
        seconds from just before the first append to the follower seeing the last
        `completed`; then the jobs' history from the feed (recorded_at of each event).
paced   the same warm-up; on `go`, submit JOBS jobs one at a time at RATE per second
        (absolute schedule), wait for all of them, and report their history.
create  with no worker running: submit JOBS jobs from TASKS tasks, report how long it took
        (job creation alone, the producer's share of a burst).
drain   follow the feed from its start until JOBS jobs completed (a worker started on a
        store that `create` filled), then report their history.

The follower rescans every 5 ms when no wake-up came, the poll interval the peers'
observers use, so no side is seen finishing later than the others for want of a notice.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from bench.children import arm, hear, tell
from bench.measure import run_async
from eventstore import NO_STREAM, new, streams
from eventstore.events import JobCompleted, JobRequested, JobStarted
from eventstore.filestore import FileStore, open_file_store

JOB_TYPE: Final = "noop"
OBSERVER_RESCAN: Final = 0.005


def _request() -> JobRequested:
    return JobRequested(job_type=JOB_TYPE, site_id="bench", user_id="bench", params={})


async def _submit(store: FileStore) -> str:
    job_id = str(uuid.uuid4())
    await store.append(streams.job(job_id), [new(_request())], NO_STREAM)
    return job_id


async def _submit_all(store: FileStore, jobs: int, tasks: int) -> None:
    """Submit `jobs` jobs from `tasks` concurrent tasks, each waiting for its append."""
    left = jobs

    async def submitter() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _submit(store)

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(submitter)


class Cpu:
    """This process's user and system CPU seconds since it was made (every thread)."""

    def __init__(self) -> None:
        t = os.times()
        self._user, self._system = t.user, t.system

    def spent(self) -> dict[str, float]:
        t = os.times()
        return {"cpu_user_s": t.user - self._user, "cpu_sys_s": t.system - self._system}


class Completions:
    """Follows the feed from where it was made and counts `completed` events as they come."""

    def __init__(self, store: FileStore, start: int) -> None:
        self.store = store
        self.start = start
        self.count = 0
        self.last_seen = 0.0  # time.monotonic() when the latest `completed` was seen
        self._changed = anyio.Event()

    async def run(self) -> None:
        async for recorded in self.store.follow(self.start):
            if isinstance(recorded.event, JobCompleted):
                self.count += 1
                self.last_seen = time.monotonic()
                self._changed.set()
                self._changed = anyio.Event()

    async def reach(self, count: int) -> float:
        """Wait until `count` jobs completed; the monotonic time the last one was seen."""
        while self.count < count:
            await self._changed.wait()
        return self.last_seen


async def _history(store: FileStore, start: int) -> dict[str, list[float]]:
    """[requested, started, completed] recorded_at (epoch s) of each finished job, by id."""
    seen: dict[str, dict[type[Any], float]] = {}
    position = start
    while events := await store.read_all(position, 5000):
        for e in events:
            kind = type(e.event)
            if kind in (JobRequested, JobStarted, JobCompleted):
                seen.setdefault(e.stream, {}).setdefault(kind, e.recorded_at.timestamp())
        position = events[-1].position + 1
    return {
        stream.split(":", 1)[1]: [h[JobRequested], h[JobStarted], h[JobCompleted]]
        for stream, h in seen.items()
        if len(h) == 3
    }


async def _warm_up(store: FileStore, completions: Completions, within: float) -> None:
    await _submit(store)
    with anyio.fail_after(within):
        await completions.reach(1)


async def _burst(data: Path, jobs: int, tasks: int, warmup_timeout: float) -> None:
    async with (
        open_file_store(data, rescan_seconds=OBSERVER_RESCAN) as store,
        anyio.create_task_group() as tg,
    ):
        completions = Completions(store, await store.head() + 1)
        tg.start_soon(completions.run)
        await _warm_up(store, completions, warmup_timeout)
        measured_from = await store.head() + 1
        tell({"ready": True})
        if await anyio.to_thread.run_sync(hear) is None:
            tg.cancel_scope.cancel()
            return
        cpu = Cpu()
        began = time.monotonic()
        await _submit_all(store, jobs, tasks)
        submitted = time.monotonic()
        finished = await completions.reach(1 + jobs)
        spent = cpu.spent()
        rows = await _history(store, measured_from)
        tg.cancel_scope.cancel()
        tell(
            {
                "seconds": finished - began,
                "submit_seconds": submitted - began,
                **spent,
                "jobs": rows,
            }
        )


async def _paced(data: Path, jobs: int, rate: float, warmup_timeout: float) -> None:
    async with (
        open_file_store(data, rescan_seconds=OBSERVER_RESCAN) as store,
        anyio.create_task_group() as tg,
    ):
        completions = Completions(store, await store.head() + 1)
        tg.start_soon(completions.run)
        await _warm_up(store, completions, warmup_timeout)
        measured_from = await store.head() + 1
        tell({"ready": True})
        if await anyio.to_thread.run_sync(hear) is None:
            tg.cancel_scope.cancel()
            return
        began = time.monotonic()
        for i in range(jobs):
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            await _submit(store)
        finished = await completions.reach(1 + jobs)
        rows = await _history(store, measured_from)
        tg.cancel_scope.cancel()
        tell({"seconds": finished - began, "jobs": rows})


async def _create(data: Path, jobs: int, tasks: int) -> None:
    async with open_file_store(data) as store:
        cpu = Cpu()
        began = time.monotonic()
        await _submit_all(store, jobs, tasks)
        tell({"seconds": time.monotonic() - began, **cpu.spent()})


async def _drain(data: Path, jobs: int, within: float) -> None:
    async with (
        open_file_store(data, create=False, rescan_seconds=OBSERVER_RESCAN) as store,
        anyio.create_task_group() as tg,
    ):
        completions = Completions(store, 1)
        tg.start_soon(completions.run)
        with anyio.fail_after(within):
            await completions.reach(jobs)
        rows = await _history(store, 1)
        tg.cancel_scope.cancel()
        tell({"jobs": rows})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_child")
    parser.add_argument("role", choices=["burst", "paced", "create", "drain"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--warmup-timeout", type=float, default=60.0)
    parser.add_argument("--limit", type=float, default=600.0, help="die after this many s")
    args = parser.parse_args(argv)
    arm(args.limit)
    if args.role == "burst":
        run_async(_burst, args.data, args.jobs, args.tasks, args.warmup_timeout)
    elif args.role == "paced":
        run_async(_paced, args.data, args.jobs, args.rate, args.warmup_timeout)
    elif args.role == "create":
        run_async(_create, args.data, args.jobs, args.tasks)
    else:
        run_async(_drain, args.data, args.jobs, args.limit - 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
