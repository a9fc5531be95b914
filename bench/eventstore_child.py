"""The event-store benchmark's child processes: `python -m bench.eventstore_child ROLE ...`.

appenders  open the data directory, create TASKS job streams, say `ready`; then for each
           `{"start", "end"}` window the parent sends, append until `end` and report.
follow     follow the feed from head + 1 and report each event's latency, taken from
           the send time (time.monotonic, system-wide on Linux) in its message.
replay     fold the whole feed into the job projection and report peak RSS.
idle       import what `replay` imports, do nothing, report RSS (the floor of `replay`).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from bench.children import arm, hear, tell
from bench.eventstore_workload import append_window, prepare, replay
from bench.measure import rss_bytes, run_async
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.records import RecordedEvent

SENT_PREFIX = "sent="


def sent_message(sent: float, warmup: bool) -> str:
    return f"{'warmup ' if warmup else ''}{SENT_PREFIX}{sent:.6f}"


def _parse_sent(event: RecordedEvent) -> tuple[float, bool] | None:
    message = getattr(event.event, "message", "")
    if not isinstance(message, str) or SENT_PREFIX not in message:
        return None
    return float(message.split(SENT_PREFIX, 1)[1]), message.startswith("warmup")


async def _appenders(data: Path, tasks: int) -> None:
    async with open_file_store(data) as store:
        writers = await prepare(store, tasks)
        tell({"ready": True})
        for _ in range(1000):
            message = await anyio.to_thread.run_sync(hear)
            if message is None or "start" not in message:
                return
            n = await append_window(store, writers, float(message["start"]), float(message["end"]))
            tell({"appends": n})


async def _follow(data: Path, count: int, seconds: float) -> None:
    async with open_file_store(data, create=False) as store:
        head = await store.head()
        tell({"ready": head})
        latencies: list[float] = []
        warmups = 0
        feed = store.follow(head + 1)
        with anyio.move_on_after(seconds):
            async for event in feed:
                received = time.monotonic()
                parsed = _parse_sent(event)
                if parsed is None:
                    continue
                sent, warmup = parsed
                if warmup:
                    warmups += 1
                else:
                    latencies.append((received - sent) * 1000)
                    if len(latencies) >= count:
                        break
        aclose = getattr(feed, "aclose", None)
        if aclose is not None:
            await aclose()
        tell({"warmups": warmups, "latencies_ms": latencies})


def _replay(data: Path) -> None:
    log = FileLog(data, create=False, readonly=True)
    try:
        events, seconds, jobs = replay(log)
    finally:
        log.close()
    gc.collect()
    peak, current = rss_bytes()
    tell(
        {"events": events, "jobs": len(jobs), "seconds": seconds, "peak_rss": peak, "rss": current}
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eventstore_child")
    parser.add_argument("role", choices=["appenders", "follow", "replay", "idle"])
    parser.add_argument("--data", type=Path, default=Path("."))
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--limit", type=float, default=600.0, help="hard time limit, seconds")
    args = parser.parse_args(argv)
    arm(args.limit)
    if args.role == "appenders":
        run_async(_appenders, args.data, args.tasks)
    elif args.role == "follow":
        run_async(_follow, args.data, args.count, args.seconds)
    elif args.role == "replay":
        _replay(args.data)
    else:
        gc.collect()
        peak, current = rss_bytes()
        tell({"peak_rss": peak, "rss": current})
    return 0


if __name__ == "__main__":
    sys.exit(main())
