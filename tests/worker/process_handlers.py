"""Job types for the worker process tests: `jobtrail worker --handlers <this file>`.

- `work`: records the run, sleeps a random 0-30 ms, returns its params, pid and attempt.
- `noop`: records the run (when asked to), returns the pid and attempt at once.
- `slow`: records the run, sleeps `params["seconds"]` (default 3; in later attempts
  `params["then"]` when given), returns pid and attempt.
- `hang`: records the run, sleeps for an hour.

A run is recorded by appending one line `<pid> <job id> <attempt>` to the file named by
`params["runs"]` (when given) as one O_APPEND write, so the lines of concurrent processes
never interleave and a test can count how often each job's handler ran, and where.

When JOBTRAIL_TEST_LOADED names a file, loading this module appends `<pid>` to it: the
worker process has opened its store and is about to start its loop.
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio

from worker import Handlers, JobContext

handlers = Handlers()


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _record_run(ctx: JobContext, params: dict[str, Any]) -> None:
    runs = params.get("runs")
    if isinstance(runs, str) and runs:
        _append_line(runs, f"{os.getpid()} {ctx.job_id} {ctx.attempt}\n")


def _who(ctx: JobContext) -> dict[str, Any]:
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@handlers.job("work")
async def work(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    _record_run(ctx, params)
    await anyio.sleep(random.uniform(0.0, 0.03))
    return {"params": params, **_who(ctx)}


@handlers.job("noop")
async def noop(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    _record_run(ctx, params)
    return _who(ctx)


@handlers.job("slow")
async def slow(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    _record_run(ctx, params)
    seconds = params.get("seconds", 3.0)
    if ctx.attempt > 1:
        seconds = params.get("then", seconds)
    await anyio.sleep(float(seconds))
    return _who(ctx)


@handlers.job("hang")
async def hang(ctx: JobContext, params: dict[str, Any]) -> None:
    _record_run(ctx, params)
    await anyio.sleep(3600)


def _announce() -> None:
    loaded = os.environ.get("JOBTRAIL_TEST_LOADED")
    if loaded:
        _append_line(loaded, f"{os.getpid()}\n")


_announce()
