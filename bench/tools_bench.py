"""`make bench ONLY=tools`: replay, verify and export on a store of 1,000,000 events.

Replay (`service.operator.replay.rebuild`: every projection, as `jobtrail replay` does)
is compared with reading and decoding the same feed records; verify
(`service.operator.verify.check`, as `jobtrail verify` does) with a bare sequential read
of every file of the data directory. Each pair runs in alternating, rotating rounds and
each figure is a ratio of medians. Export runs as a `jobtrail export` child writing to
/dev/null, and its whole-process peak RSS is the figure; an idle child with the same
imports (`jobtrail export --help`) is its floor.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from bench.eventstore_workload import read_decode
from bench.measure import Budget, Context, alternate, median, ratio, scratch_dir, summary
from bench.report import Result, figure
from bench.tools_children import Exited, run_jobtrail
from bench.tools_workload import Built, bare_read, build_store
from eventstore.filelog import FileLog
from service.operator.replay import rebuild
from service.operator.verify import VerifySettings, check

MB: Final = 1_000_000
UNTIL_END: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and rounds; `quick` shrinks them for a smoke run."""

    events: int = 1_000_000
    replay_rounds: int = 3
    verify_rounds: int = 3
    export_runs: int = 1
    build_seconds: float = 180.0  # the build must finish within this


QUICK: Final = Plan(events=20_000, replay_rounds=1, verify_rounds=1, build_seconds=60.0)


def run(ctx: Context) -> Result:
    plan = QUICK if ctx.quick else Plan()
    baseline: dict[str, Any] = {}
    with scratch_dir(ctx, "tools") as tmp:
        data = tmp / "data"
        built = _build(ctx, plan, data)
        baseline["store"] = {**asdict(built), "feed_and_logs_mb": bare_read(data)[0] / MB}
        baseline["replay"] = _replay(ctx, plan, data, built)
        baseline["verify"] = _verify(ctx, plan, data, built)
        baseline["export"] = _export(ctx, plan, data, built)
    r, v, e = baseline["replay"], baseline["verify"], baseline["export"]
    figures = [
        figure(
            f"replay {built.events:,} events: events/s ÷ read+decode",
            ratio(r["replay_events_per_s"]["median"], r["read_decode_events_per_s"]["median"]),
            "ratio",
            ">= 0.5",
        ),
        figure(
            "verify: bytes/s ÷ sequential read of the files",
            ratio(v["verify_bytes_per_s"]["median"], v["bare_read_bytes_per_s"]["median"]),
            "ratio",
            ">= 0.5",
        ),
        figure("export peak RSS (whole process)", e["peak_rss_mb"], "MB", "<= 100"),
    ]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": sys.version.split()[0],
        "quick": ctx.quick,
        "plan": asdict(plan),
    }
    return Result(figures, baseline, meta)


def _build(ctx: Context, plan: Plan, data: Path) -> Built:
    ctx.budget.require(plan.build_seconds, "building the store")
    return build_store(data, plan.events, time.monotonic() + plan.build_seconds)


def _rounds(
    sides: dict[str, Callable[[], float]], rounds: int, budget: Budget, round_seconds: float
) -> dict[str, list[float]]:
    """`measure.alternate` over plain functions: rotating order, while a round still fits."""

    def wrap(fn: Callable[[], float]) -> Callable[[], Awaitable[float]]:
        async def side() -> float:
            return fn()

        return side

    async def main() -> dict[str, list[float]]:
        wrapped = {name: wrap(fn) for name, fn in sides.items()}
        return await alternate(wrapped, rounds, budget, round_seconds)

    out: dict[str, list[float]] = anyio.run(main)
    return out


def _replay(ctx: Context, plan: Plan, data: Path, built: Built) -> dict[str, Any]:
    """Events/s of read+decode and of `jobtrail replay`'s rebuild of every projection."""
    times: dict[str, list[float]] = {"read_decode_s": [], "replay_s": []}
    processes: list[int] = []  # per replay round: 2 when it folded in a second process too

    def bare() -> float:
        log = FileLog(data, create=False, readonly=True)
        try:
            n, seconds = read_decode(log)
        finally:
            log.close()
        _check(n == built.events, f"read {n} of {built.events} events")
        times["read_decode_s"].append(round(seconds, 3))
        return n / seconds

    def replay() -> float:
        started = time.perf_counter()
        rebuilt = rebuild(data, UNTIL_END)  # parallel or not as `jobtrail replay` decides
        seconds = time.perf_counter() - started
        n, jobs = rebuilt.scan.events, len(rebuilt.model.jobs)
        _check(n == built.events and jobs == built.jobs, f"replayed {n} events, {jobs} jobs")
        _check(len(rebuilt.model.leads) == built.leads, "replay lost leads")
        times["replay_s"].append(round(seconds, 3))
        processes.append(rebuilt.processes)
        return n / seconds

    runs = _rounds(
        {"read_decode_events_per_s": bare, "replay_events_per_s": replay},
        plan.replay_rounds,
        ctx.budget,
        round_seconds=45.0,
    )
    out: dict[str, Any] = {"events": built.events}
    out.update({name: summary(values) for name, values in runs.items()})
    out.update({name: summary(values) for name, values in times.items()})
    out["replay_processes"] = processes
    return out


def _verify(ctx: Context, plan: Plan, data: Path, built: Built) -> dict[str, Any]:
    """Bytes/s of a bare read of every file and of `jobtrail verify`'s two checks."""
    times: dict[str, list[float]] = {"bare_read_s": [], "verify_s": []}
    sizes: dict[str, int] = {}

    def bare() -> float:
        size, seconds = bare_read(data)
        sizes["bare_read_bytes"] = size
        times["bare_read_s"].append(round(seconds, 3))
        return size / seconds

    def verify() -> float:
        started = time.perf_counter()
        result = check(VerifySettings(data), show_progress=False)  # parallel as the CLI decides
        seconds = time.perf_counter() - started
        _check(result.ok and result.events == built.events, f"verify said {result}"[:300])
        _check(result.jobs == built.jobs, f"verify checked {result.jobs} jobs")
        sizes["verify_bytes"] = result.bytes
        times["verify_s"].append(round(seconds, 3))
        return result.bytes / seconds

    ctx.budget.require(30, "verify")
    runs = _rounds(
        {"bare_read_bytes_per_s": bare, "verify_bytes_per_s": verify},
        plan.verify_rounds,
        ctx.budget,
        round_seconds=60.0,
    )
    out: dict[str, Any] = dict(sizes)
    out.update({name: summary(values) for name, values in runs.items()})
    out.update({name: summary(values) for name, values in times.items()})
    return out


def _export(ctx: Context, plan: Plan, data: Path, built: Built) -> dict[str, Any]:
    """Peak RSS of `jobtrail export` to /dev/null, and of an idle child with its imports."""
    ctx.budget.require(30, "the export children")
    idle = run_jobtrail(["export", "--help"], ctx.repo, 60.0)
    _check(idle.status == 0, f"export --help exited {idle.status}: {idle.stderr[-300:]}")
    exports: list[Exited] = []
    for _ in range(plan.export_runs):
        if exports and not ctx.budget.fits(2 * exports[-1].seconds):
            break
        done = run_jobtrail(["export", "--data", str(data)], ctx.repo, ctx.budget.left())
        _check(done.status == 0, f"export exited {done.status}: {done.stderr[-300:]}")
        _check(f"{built.events} events written" in done.stderr, f"export said {done.stderr!r}")
        exports.append(done)
    seconds = median([e.seconds for e in exports])
    return {
        "peak_rss_mb": max(e.peak_rss for e in exports) / MB,
        "idle_process_peak_rss_mb": idle.peak_rss / MB,
        "export_s": summary([e.seconds for e in exports]),
        "export_events_per_s": ratio(built.events, seconds),
    }


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"benchmark workload went wrong: {what}")
