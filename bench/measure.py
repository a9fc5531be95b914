"""Shared by every benchmark: its context, time budget, scratch space and statistics."""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from bench.report import Result


class BudgetExceeded(RuntimeError):
    """A benchmark ran out of its time budget before it could measure a figure."""


class Budget:
    """A deadline on the monotonic clock; loops ask it whether another run still fits."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, seconds: float) -> bool:
        return self.left() > seconds

    def require(self, seconds: float, what: str) -> None:
        """Raise BudgetExceeded unless `seconds` more fit in the budget."""
        if not self.fits(seconds):
            raise BudgetExceeded(f"no time left for {what} ({self.left():.0f} s left)")


@dataclass(frozen=True, slots=True)
class Context:
    """What a benchmark gets: where the repo is, where to put scratch files, how long it has."""

    repo: Path
    scratch: Path  # under the repo, so on the same filesystem as a checkout's data directory
    budget: Budget
    quick: bool  # smaller sizes and shorter runs: a smoke test, not the real figures


class Benchmark(Protocol):
    """A benchmark module's entry point: measure, compare, and hand back the figures."""

    def __call__(self, ctx: Context) -> Result: ...


@contextmanager
def scratch_dir(ctx: Context, prefix: str) -> Iterator[Path]:
    """A fresh directory under the scratch area, removed with everything in it afterwards."""
    ctx.scratch.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=ctx.scratch))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        try:
            ctx.scratch.rmdir()  # only once no other run uses it
        except OSError:
            pass


async def alternate(
    sides: Mapping[str, Callable[[], Awaitable[float]]],
    rounds: int,
    budget: Budget,
    round_seconds: float,
) -> dict[str, list[float]]:
    """Run every side once per round, rotating the order, while a whole round still fits.

    Rotating spreads a slow patch of a noisy machine over every side instead of one.
    At least one round always runs.
    """
    names = list(sides)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if r and not budget.fits(round_seconds):
            break
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(await sides[name]())
    return runs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """The median of some runs and the runs themselves, for a result's baseline."""
    return {"median": median(values), "runs": [round(v, 3) for v in values]}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def rss_bytes() -> tuple[int, int]:
    """This process's (peak, current) resident set size, from /proc/self/status."""
    peak = current = 0
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024
    except OSError:
        import resource

        peak = current = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak, current


def run_async(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run on the event loop the service runs on: uvloop when installed, as uvicorn picks."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn, *args)
    return anyio.run(fn, *args, backend_options={"use_uvloop": True})
