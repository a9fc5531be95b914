"""Where a jobtrail burst's commits wait: `python -m bench.worker_lockdiag [--jobs N]`.

Not a benchmark (it is not in the registry, and its timers cost a little): one burst like
`make bench ONLY=worker`'s, a `jobtrail worker --concurrency C` and a producer appending
one `JobRequested` per job from 16 tasks, both run through this module, which first wraps
the file store's commit steps with timers in its own process:

  lock wait  blocked in flock(LOCK_EX) on the feed (another process is committing)
  lock hold  from getting the feed lock to letting it go (plan + write, per commit)
  write      FileLog._write: the feed record, each stream's log (a new file for a new
             job), the mark; under the lock
  fsync      FileLog._sync of the feed, after the lock
  plan       FileLog._plan, under the lock

With --create-only the producer runs alone (no worker), as the benchmark's
`jobtrail_parts.create_per_s` does. Every number is per commit, in milliseconds.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
STEPS: Final = ("wait", "hold", "write", "sync", "plan")

_stats: dict[str, list[float]] = {step: [] for step in STEPS}
_held = threading.local()


def _instrument() -> None:
    """Wrap the feed lock and FileLog's commit steps with timers; dump them at exit."""
    from eventstore import filelog

    real_flock = fcntl.flock

    def flock(fd: Any, operation: int) -> None:
        if operation == fcntl.LOCK_EX:
            began = time.perf_counter()
            real_flock(fd, operation)
            now = time.perf_counter()
            _stats["wait"].append(now - began)
            _held.at = now
            return
        real_flock(fd, operation)
        if operation == fcntl.LOCK_UN and getattr(_held, "at", None) is not None:
            _stats["hold"].append(time.perf_counter() - _held.at)
            _held.at = None

    fcntl.flock = flock
    for step, method in (("write", "_write"), ("sync", "_sync"), ("plan", "_plan")):
        setattr(filelog.FileLog, method, _timed(step, getattr(filelog.FileLog, method)))
    atexit.register(_dump)


def _timed(step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _stats[step].append(time.perf_counter() - began)

    return timed


def _dump() -> None:
    out = os.environ.get("LOCKDIAG_OUT")
    if out:
        Path(out).write_text(json.dumps(_stats))


def _line(name: str, path: Path) -> str:
    stats: dict[str, list[float]] = json.loads(path.read_text())
    cells = [f"{name:<9} commits {len(stats['hold']):>4}"]
    for step in STEPS:
        values = sorted(v * 1000 for v in stats[step])
        if values:
            p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
            cells.append(
                f"{step} p50 {statistics.median(values):.2f} p90 {p90:.2f} "
                f"sum {sum(values) / 1000:.2f} s"
            )
    return " | ".join(cells)


def _diagnose(jobs: int, concurrency: int, create_only: bool) -> None:
    from bench.children import Child, stop
    from eventstore.filelog import FileLog

    tmp = Path(tempfile.mkdtemp(prefix="tmp-lockdiag-", dir=REPO / "bench"))
    data = tmp / "data"
    me = [sys.executable, "-m", "bench.worker_lockdiag"]
    worker: subprocess.Popen[bytes] | None = None
    try:
        FileLog(data).close()
        if not create_only:
            worker = subprocess.Popen(
                [*me, "worker", "worker", "--data", str(data), "--concurrency", str(concurrency)]
                + ["--handlers", "bench/worker_noop_handlers.py"],
                cwd=REPO,
                env={**os.environ, "LOCKDIAG_OUT": str(tmp / "worker.json")},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        role = "create" if create_only else "burst"
        producer = subprocess.Popen(
            [*me, "child", role, "--data", str(data), "--jobs", str(jobs)],
            cwd=REPO,
            env={**os.environ, "LOCKDIAG_OUT": str(tmp / "producer.json")},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        child = Child("producer", producer)
        try:
            if not create_only:
                child.recv(60)
                child.send({"go": True})
            answer = child.recv(jobs / 20 + 60)
        finally:
            stop(producer)
        rate = jobs / answer["seconds"]
        what = "jobs created/s, no worker" if create_only else "jobs/s end to end"
        print(f"{rate:,.0f} {what} ({jobs} jobs in {answer['seconds']:.2f} s)")
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=15)
        print(_line("producer", tmp / "producer.json"))
        if worker is not None:
            print(_line("worker", tmp / "worker.json"))
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker"]:
        _instrument()
        from service.cli import main as jobtrail

        code = jobtrail(args[1:])
        _dump()
        return code
    if args[:1] == ["child"]:
        _instrument()
        from bench.worker_child import main as child

        code = child(args[1:])
        _dump()
        return code
    parser = argparse.ArgumentParser(prog="python -m bench.worker_lockdiag")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--create-only", action="store_true")
    parsed = parser.parse_args(args)
    _diagnose(parsed.jobs, parsed.concurrency, parsed.create_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
