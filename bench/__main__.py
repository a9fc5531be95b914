"""`python -m bench [--only NAME]`: run benchmarks, print their tables, write their JSON.

Exit codes: 0 every figure meets its target, 1 a figure missed (or a benchmark failed),
2 usage (an unknown benchmark name), 143 terminated (SIGTERM; temp dirs and children are
cleaned up first).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from bench.measure import Benchmark, Budget, Context
from bench.report import print_result, write_json

BENCHMARKS: Final[dict[str, str]] = {
    # name -> module whose `run(ctx) -> Result` measures it; adding one is one line here.
    "eventstore": "bench.eventstore_bench",
    "http": "bench.http_bench",
    "tools": "bench.tools_bench",
    "worker": "bench.worker_bench",
}

REPO: Final = Path(__file__).resolve().parent.parent
BUDGET_SECONDS: Final = 540.0  # each benchmark plans within this; the hard stop is at 600
HARD_LIMIT_SECONDS: Final = 600


class HardLimit(BaseException):
    """A benchmark overran the 10 minutes every benchmark must stay under."""


class Terminated(BaseException):
    """SIGTERM: stop every benchmark, cleaning up on the way out."""


def load(name: str) -> Benchmark:
    run: Benchmark = importlib.import_module(BENCHMARKS[name]).run
    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure jobtrail against baselines taken in the same run; "
        "results go to bench/results/<name>.json.",
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only NAME ({', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs: a smoke test only"
    )
    parser.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results", help="where to write JSON"
    )
    return parser


def _overran(_signum: int, _frame: FrameType | None) -> None:
    raise HardLimit(f"over the hard limit of {HARD_LIMIT_SECONDS} s")


def _terminated(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated("terminated")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    names: list[str] = args.only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"bench: unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    # Finally-blocks clean up temp dirs and children on a hard stop or a SIGTERM too.
    signal.signal(signal.SIGALRM, _overran)
    signal.signal(signal.SIGTERM, _terminated)
    missed = False
    for name in names:
        ctx = Context(
            repo=REPO,
            scratch=REPO / "bench" / "tmp",
            budget=Budget(BUDGET_SECONDS),
            quick=args.quick,
        )
        started = time.monotonic()
        print(f"bench: running {name}...", file=sys.stderr, flush=True)
        signal.alarm(HARD_LIMIT_SECONDS)
        try:
            result = load(name)(ctx)
        except Terminated:
            print(f"bench: terminated during {name}", file=sys.stderr)
            return 128 + signal.SIGTERM
        except (Exception, HardLimit):
            traceback.print_exc()
            print(f"bench: {name} failed", file=sys.stderr)
            missed = True
            continue
        finally:
            signal.alarm(0)
        print_result(name, result, sys.stdout)
        path = args.results / f"{name}.json"
        write_json(result, path)
        print(f"\n{name}: {time.monotonic() - started:.0f} s, wrote {path}", flush=True)
        missed |= not result.meets
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
