"""The peers' producer: `<peers venv>/bin/python -m bench.worker_peer ROLE PEER ...`.

Runs in the peers' own virtualenv (bench/tmp-peers-venv) beside one Huey consumer or one
RQ worker, and talks JSON lines with the benchmark over stdin and stdout like
`bench.children` (it cannot import that: msgspec is not installed here).

burst  enqueue one warm-up job and wait for its result (the worker is up), say `ready`;
       on `go`, enqueue JOBS no-op jobs one after another as fast as they go, and report
       the seconds from just before the first enqueue to the poll that sees the last
       result stored.
paced  the same warm-up; on `go`, enqueue JOBS `stamp` jobs at RATE per second (absolute
       schedule), each noting time.time() just before its enqueue; report each job's
       pickup: the time its function started (its result) minus that.

PEER is `huey` (SqliteHuey on BENCH_HUEY_DB, default settings) or `rq` (on --redis URL).
Results are counted every 5 ms: Huey's result rows, RQ's finished-job registry.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Final

POLL: Final = 0.005


def tell(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def hear() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    if not line:
        return None
    answer: dict[str, Any] = json.loads(line)
    return answer


class Peer(ABC):
    """Enqueue a no-op or a stamp, count stored results, read a stamp's value."""

    @abstractmethod
    def noop(self) -> None: ...

    @abstractmethod
    def stamp(self) -> Any: ...

    @abstractmethod
    def results(self) -> int: ...

    @abstractmethod
    def value(self, handle: Any) -> float: ...

    def settings(self) -> dict[str, Any]:
        return {}


class HueyPeer(Peer):
    def __init__(self) -> None:
        self.tasks = importlib.import_module("bench.worker_peer_tasks")
        self.huey = self.tasks.huey
        if self.huey is None:
            raise SystemExit("BENCH_HUEY_DB must name the Huey database")

    def noop(self) -> None:
        self.tasks.huey_noop()

    def stamp(self) -> Any:
        return self.tasks.huey_stamp()

    def results(self) -> int:
        count: int = self.huey.storage.result_store_size()
        return count

    def value(self, handle: Any) -> float:
        return float(handle.get(preserve=True))

    def settings(self) -> dict[str, Any]:
        storage = self.huey.storage
        ((synchronous,),) = storage.sql("pragma synchronous", results=True)
        ((journal,),) = storage.sql("pragma journal_mode", results=True)
        return {
            "huey": importlib.import_module("huey").__version__,
            "sqlite_synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                synchronous, str(synchronous)
            ),
            "sqlite_journal_mode": journal,
        }


class RqPeer(Peer):
    def __init__(self, url: str) -> None:
        from redis import Redis  # type: ignore[import-not-found]
        from rq import Queue  # type: ignore[import-not-found]

        self.tasks = importlib.import_module("bench.worker_peer_tasks")
        self.redis = Redis.from_url(url)
        self.queue = Queue(connection=self.redis)
        self.finished = self.queue.finished_job_registry.key

    def noop(self) -> None:
        self.queue.enqueue(self.tasks.noop)

    def stamp(self) -> Any:
        return self.queue.enqueue(self.tasks.stamp)

    def results(self) -> int:
        count: int = self.redis.zcard(self.finished)
        return count

    def value(self, handle: Any) -> float:
        return float(handle.return_value())

    def settings(self) -> dict[str, Any]:
        config = self.redis.config_get("save")
        config.update(self.redis.config_get("appendonly"))
        config.update(self.redis.config_get("appendfsync"))
        info = self.redis.info("server")
        return {
            "rq": importlib.import_module("rq").__version__,
            "redis_server": info.get("redis_version"),
            "redis": {str(k): str(v) for k, v in config.items()},
        }


def wait_results(peer: Peer, count: int, timeout: float) -> float:
    """Poll until `count` results are stored; the monotonic time of the poll that saw it."""
    end = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if peer.results() >= count:
            return now
        if now > end:
            raise SystemExit(f"only {peer.results()} of {count} results after {timeout:.0f} s")
        time.sleep(POLL)


def warm_up(peer: Peer, timeout: float) -> bool:
    peer.noop()
    wait_results(peer, 1, timeout)
    tell({"ready": True, "settings": peer.settings()})
    return hear() is not None


def burst(peer: Peer, jobs: int, timeout: float) -> None:
    if not warm_up(peer, timeout):
        return
    enqueue: Callable[[], None] = peer.noop
    cpu = os.times()
    began = time.monotonic()
    for _ in range(jobs):
        enqueue()
    submitted = time.monotonic()
    finished = wait_results(peer, 1 + jobs, timeout)
    spent = os.times()
    tell(
        {
            "seconds": finished - began,
            "submit_seconds": submitted - began,
            "cpu_user_s": spent.user - cpu.user,
            "cpu_sys_s": spent.system - cpu.system,
        }
    )


def paced(peer: Peer, jobs: int, rate: float, timeout: float) -> None:
    if not warm_up(peer, timeout):
        return
    sent: list[tuple[float, Any]] = []
    began = time.monotonic()
    for i in range(jobs):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        at = time.time()
        sent.append((at, peer.stamp()))
    wait_results(peer, 1 + jobs, timeout)
    pickups = [(peer.value(handle) - at) * 1000 for at, handle in sent]
    tell({"seconds": time.monotonic() - began, "pickup_ms": pickups})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_peer")
    parser.add_argument("role", choices=["burst", "paced"])
    parser.add_argument("peer", choices=["huey", "rq"])
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--limit", type=float, default=600.0, help="die after this many s")
    args = parser.parse_args(argv)
    signal.alarm(max(1, int(args.limit)))
    peer: Peer = HueyPeer() if args.peer == "huey" else RqPeer(args.redis)
    if args.role == "burst":
        burst(peer, args.jobs, args.timeout)
    else:
        paced(peer, args.jobs, args.rate, args.timeout)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
