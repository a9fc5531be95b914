"""`make bench ONLY=eventstore`: the file store against bare loops measured in the same run.

Throughput sides (bare write+fdatasync, one writer, 32 appenders in one process, 4
processes of 8) run in alternating, rotating rounds and each figure is a ratio of
medians. Replay is compared with reading and decoding the same records; follow latency
and the projection's memory are measured in child processes of their own.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from bench.children import Child, spawn
from bench.eventstore_child import sent_message
from bench.eventstore_workload import (
    Writer,
    append_window,
    bare_fdatasync,
    build_jobs,
    feed_bytes,
    prepare,
    progressed,
    read_decode,
    read_pages,
    replay,
)
from bench.measure import (
    Context,
    alternate,
    percentile,
    ratio,
    run_async,
    scratch_dir,
    summary,
)
from bench.report import Figure, Result, figure
from eventstore.filelog import FileLog
from eventstore.filestore import FileStore, open_file_store

CHILD: Final = "bench.eventstore_child"
MB: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and durations; `quick` shrinks them for a smoke run."""

    rounds: int = 5
    window: float = 2.0  # seconds of appending per throughput run
    concurrent: int = 32
    processes: int = 4
    tasks_per_process: int = 8
    jobs: int = 100_000
    replay_rounds: int = 5
    page_seconds: float = 5.0
    follow_events: int = 200
    follow_warmups: int = 5
    follow_gap: tuple[float, float] = (0.010, 0.030)


QUICK: Final = Plan(
    rounds=2, window=0.5, jobs=5_000, replay_rounds=1, page_seconds=1.0, follow_events=40
)


def run(ctx: Context) -> Result:
    plan = QUICK if ctx.quick else Plan()
    baseline: dict[str, Any] = {}
    with scratch_dir(ctx, "eventstore") as tmp:
        run_async(_measure, ctx, plan, tmp, baseline)
    t, r, f, m = baseline["throughput"], baseline["replay"], baseline["follow"], baseline["memory"]
    one = t["one_writer_per_s"]["median"]
    figures: list[Figure] = [
        figure(
            "one writer ÷ bare write+fdatasync",
            ratio(one, t["bare_write_fdatasync_per_s"]["median"]),
            "ratio",
            ">= 0.5",
        ),
        figure(
            f"{plan.concurrent} appenders, 1 process ÷ one writer",
            ratio(t["appenders_1_process_per_s"]["median"], one),
            "ratio",
            ">= 5",
        ),
        figure(
            f"{plan.processes * plan.tasks_per_process} appenders, "
            f"{plan.processes} processes ÷ one writer",
            ratio(t["appenders_processes_per_s"]["median"], one),
            "ratio",
            ">= 5",
        ),
        figure(
            f"replay {plan.jobs:,} jobs × 5 into job projection ÷ read+decode",
            ratio(r["replay_events_per_s"]["median"], r["read_decode_events_per_s"]["median"]),
            "ratio",
            ">= 0.5",
        ),
        figure("follow latency p50 (other process)", f["p50_ms"], "ms", "<= 20"),
        figure("follow latency p99 (other process)", f["p99_ms"], "ms", "<= 100"),
        figure(f"peak RSS holding {plan.jobs:,} job views", m["peak_rss_mb"], "MB", "<= 300"),
    ]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": sys.version.split()[0],
        "quick": ctx.quick,
        "plan": asdict(plan),
    }
    return Result(figures, baseline, meta)


async def _measure(ctx: Context, plan: Plan, tmp: Path, baseline: dict[str, Any]) -> None:
    baseline["throughput"] = await _throughput(ctx, plan, tmp)
    baseline["replay"], baseline["memory"] = await _replay(ctx, plan, tmp / "replay")
    baseline["follow"] = await _follow(ctx, plan, tmp / "follow")


# -- throughput ---------------------------------------------------------------------------


async def _throughput(ctx: Context, plan: Plan, tmp: Path) -> dict[str, Any]:
    """Appends/s of the bare loop, one writer, N appenders, and P processes of N/P."""
    bare_dir = tmp / "bare"
    bare_dir.mkdir()
    procs_dir = tmp / "processes"
    async with open_file_store(procs_dir):
        pass  # created once here, so the children do not race to initialise it
    argv = ["appenders", "--data", str(procs_dir), "--tasks", str(plan.tasks_per_process)]
    argv += ["--limit", str(int(ctx.budget.left()))]
    async with (
        open_file_store(tmp / "one") as one_store,
        open_file_store(tmp / "many") as many_store,
    ):
        (one,) = await prepare(one_store, 1)
        many = await prepare(many_store, plan.concurrent)
        record_size = await _record_size(one_store, one)
        with spawn(CHILD, [argv] * plan.processes, ctx.repo) as children:
            for child in children:
                await anyio.to_thread.run_sync(child.recv, 60.0)  # ready: streams created
            window = plan.window

            async def bare() -> float:
                return await anyio.to_thread.run_sync(bare_fdatasync, bare_dir, record_size, window)

            async def one_writer() -> float:
                return await _in_process(one_store, [one], window)

            async def appenders() -> float:
                return await _in_process(many_store, many, window)

            async def processes() -> float:
                return await _in_children(children, window)

            runs = await alternate(
                {
                    "bare_write_fdatasync_per_s": bare,
                    "one_writer_per_s": one_writer,
                    "appenders_1_process_per_s": appenders,
                    "appenders_processes_per_s": processes,
                },
                plan.rounds,
                ctx.budget,
                round_seconds=4 * (window + 1.0),
            )
    out: dict[str, Any] = {"record_bytes": record_size, "window_s": window}
    out.update({name: summary(values) for name, values in runs.items()})
    return out


async def _record_size(store: FileStore, writer: Writer, n: int = 200) -> int:
    """The mean size of a one-event feed record, measured by appending `n` of them."""
    root = store.log.layout.root
    before = feed_bytes(root)
    for _ in range(n):
        (recorded,) = await store.append(
            writer.stream, [progressed(writer.version)], writer.version
        )
        writer.version = recorded.version
    return round((feed_bytes(root) - before) / n)


async def _in_process(store: FileStore, writers: list[Writer], window: float) -> float:
    start = time.monotonic() + 0.02
    n = await append_window(store, writers, start, start + window)
    return n / window


async def _in_children(children: list[Child], window: float) -> float:
    """Total appends/s of every child over one common window on the monotonic clock."""
    start = time.monotonic() + 0.1
    for child in children:
        child.send({"start": start, "end": start + window})
    total = 0
    for child in children:
        answer = await anyio.to_thread.run_sync(child.recv, window + 30.0)
        total += int(answer["appends"])
    return total / window


# -- replay and memory --------------------------------------------------------------------


async def _replay(ctx: Context, plan: Plan, data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Events/s of read+decode and of replay into the job projection; RSS of holding it."""
    ctx.budget.require(60, "building the replay store")
    started = time.monotonic()
    events = await anyio.to_thread.run_sync(
        build_jobs, data, plan.jobs, time.monotonic() + ctx.budget.left() - 60
    )
    built = time.monotonic() - started
    log = FileLog(data, create=False, readonly=True)
    try:

        async def bare() -> float:
            n, seconds = await anyio.to_thread.run_sync(read_decode, log)
            _check(n == events, f"read {n} of {events} events")
            return n / seconds

        async def folded() -> float:
            n, seconds, jobs = await anyio.to_thread.run_sync(replay, log)
            _check(n == events and len(jobs) == plan.jobs, f"replayed {n} events, {len(jobs)} jobs")
            return n / seconds

        runs = await alternate(
            {"read_decode_events_per_s": bare, "replay_events_per_s": folded},
            plan.replay_rounds,
            ctx.budget,
            round_seconds=60,
        )
    finally:
        log.close()
    # Followers and projection runners page with read_all; informative, each run bounded.
    # `follow` pages on a fresh reader; ProjectionRunner.catch_up asks for head() first.
    pages: dict[str, Any] = {}
    for variant in ("fresh_reader", "after_head"):
        reader = FileLog(data, create=False, readonly=True)
        try:
            if variant == "after_head":
                await anyio.to_thread.run_sync(reader.head)
            pages[variant] = await anyio.to_thread.run_sync(read_pages, reader, plan.page_seconds)
        finally:
            reader.close()
    replay_out: dict[str, Any] = {
        "jobs": plan.jobs,
        "events": events,
        "feed_mb": feed_bytes(data) / MB,
        "build_s": built,
    }
    replay_out.update({name: summary(values) for name, values in runs.items()})
    replay_out["read_all_pages_of_1000"] = pages

    ctx.budget.require(60, "the memory child")
    limit = str(int(ctx.budget.left()))
    with spawn(CHILD, [["idle", "--limit", limit]], ctx.repo) as (idle,):
        floor = await anyio.to_thread.run_sync(idle.recv, 60.0)
    with spawn(CHILD, [["replay", "--data", str(data), "--limit", limit]], ctx.repo) as (child,):
        held = await anyio.to_thread.run_sync(child.recv, ctx.budget.left())
    _check(held["jobs"] == plan.jobs, f"the memory child holds {held['jobs']} jobs")
    memory = {
        "jobs": held["jobs"],
        "peak_rss_mb": held["peak_rss"] / MB,
        "rss_after_replay_mb": held["rss"] / MB,
        "idle_process_rss_mb": floor["rss"] / MB,
        "replay_in_child_s": held["seconds"],
    }
    return replay_out, memory


# -- follow latency -----------------------------------------------------------------------


async def _follow(ctx: Context, plan: Plan, data: Path) -> dict[str, Any]:
    """Latency from just before `append` here to `follow` yielding it in another process."""
    seconds = plan.follow_events * plan.follow_gap[1] * 2 + 30
    ctx.budget.require(seconds, "follow latency")
    rng = random.Random(20240601)
    async with open_file_store(data) as store:
        (writer,) = await prepare(store, 1)
        argv = ["follow", "--data", str(data), "--count", str(plan.follow_events)]
        argv += ["--seconds", str(seconds), "--limit", str(seconds + 30)]
        with spawn(CHILD, [argv], ctx.repo) as (child,):
            await anyio.to_thread.run_sync(child.recv, 60.0)
            await anyio.sleep(0.2)
            for i in range(plan.follow_warmups + plan.follow_events):
                warmup = i < plan.follow_warmups
                message = sent_message(time.monotonic(), warmup)
                (recorded,) = await store.append(
                    writer.stream, [progressed(writer.version, message)], writer.version
                )
                writer.version = recorded.version
                await anyio.sleep(0.1 if warmup else rng.uniform(*plan.follow_gap))
            answer = await anyio.to_thread.run_sync(child.recv, seconds)
    latencies = [float(x) for x in answer["latencies_ms"]]
    missing = plan.follow_events - len(latencies)
    padded = latencies + [math.inf] * missing  # a lost event counts as never delivered
    return {
        "events": plan.follow_events,
        "received": len(latencies),
        "p50_ms": percentile(padded, 50),
        "p90_ms": percentile(padded, 90),
        "p99_ms": percentile(padded, 99),
        "max_ms": max(padded, default=math.nan),
    }


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"benchmark workload went wrong: {what}")
