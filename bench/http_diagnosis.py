"""Where a durable creation's time goes: a diagnosis to run by hand, not a figure.

`python -m bench.http_diagnosis KIND DATA SECONDS` (DATA a fresh directory; remove it
afterwards) prints one JSON object: creations/s, and the event loop thread's CPU per
creation, with 64 in flight as the HTTP benchmark's wrk keeps requests. Not part of
`make bench ONLY=http`: its files, or their removal, would weigh on the wrk rounds (ext4's
inode allocator is slow for a while after many files were removed, docs/performance.md).

- `store`: 64 tasks append a new job's `requested` to a file store in a loop, as
  `POST /api/jobs` does, with no HTTP at all: what the store alone sustains with as many
  appends in flight as wrk keeps requests.
- `asgi`: the same 64 in flight, each a whole `POST /api/jobs` handed to the service's
  ASGI app in this process (no sockets, no uvicorn): creations/s, and the event loop
  thread's CPU per creation.
- `files`: what one job's own log costs the committer, as the file store writes it in a
  data directory made by `open_file_store`: a new stream log (create, header and record,
  close) against one more record appended to a log that exists (open, write, close).
  Wall and this process's CPU (user and kernel) per log, over SECONDS of each in turn.
- `files_after_removal`: the same, right after 50,000 logs were made, synced and removed
  one by one, as a retention prune removes them. On ext4 without a journal the kernel
  then skips each recently freed inode, one by one, when it allocates a new one
  (fs/ext4/ialloc.c, `recently_deleted`: for 60 s, or 360 s while its block is dirty).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import uvloop
from starlette.types import Message

from bench.http_servers import SECRET
from eventstore import NO_STREAM, AppendTo, framing, new, streams
from eventstore.events import JobRequested
from eventstore.filestore import open_file_store
from eventstore.records import uuid7
from service.app import create_app
from service.auth import Principal, issue_token
from service.settings import from_env, with_handlers

IN_FLIGHT = 64
BODY = b'{"type": "noop"}'


async def _loop(seconds: float, one: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """`one` over and over by IN_FLIGHT tasks for `seconds`: rate and loop CPU per call."""
    done = 0
    end = time.monotonic() + seconds

    async def task() -> None:
        nonlocal done
        while time.monotonic() < end:
            await one()
            done += 1

    started, cpu = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(task() for _ in range(IN_FLIGHT)))
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    return {"per_s": done / elapsed, "loop_cpu_us": cpu / done * 1e6, "calls": done}


async def store_only(data: Path, seconds: float) -> dict[str, float]:
    async with open_file_store(data, create=True, commit_process=True) as store:

        async def append() -> None:
            event = JobRequested(job_type="noop", site_id="bench", user_id="admin1")
            stream = streams.job(str(uuid7()))
            await store.append_many([AppendTo(stream, [new(event)], NO_STREAM)])

        return await _loop(seconds, append)


async def asgi(data: Path, seconds: float) -> dict[str, float]:
    os.environ.update(
        JOBTRAIL_DATA=str(data), JOBTRAIL_SECRET=SECRET, JOBTRAIL_HANDLERS="bench.http_handlers"
    )
    token = issue_token(SECRET, Principal("bench", "admin1", "admin"), 3600)
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-length", str(len(BODY)).encode()),
    ]
    settings = with_handlers(from_env())
    async with open_file_store(data, create=True, commit_process=True) as store:
        app = create_app(store, settings)
        async with app.router.lifespan_context(app):

            async def create() -> None:
                scope: dict[str, Any] = {
                    "type": "http",
                    "asgi": {"version": "3.0"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": "/api/jobs",
                    "raw_path": b"/api/jobs",
                    "query_string": b"",
                    "root_path": "",
                    "headers": headers,
                    "client": ("127.0.0.1", 1),
                    "server": ("127.0.0.1", 8000),
                    "state": {},
                }
                received = False
                status: list[int] = []

                async def receive() -> Message:
                    nonlocal received
                    if not received:
                        received = True
                        return {"type": "http.request", "body": BODY, "more_body": False}
                    await asyncio.sleep(3600)  # a client that stays connected
                    return {"type": "http.disconnect"}

                async def send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        status.append(message["status"])

                await app(scope, receive, send)
                if status != [202]:
                    raise RuntimeError(f"POST /api/jobs answered {status}")

            return await _loop(seconds, create)


REMOVED_FIRST = 50_000
RECORD = b"r" * 300  # about a `requested` record's size


def write_new_file(path: str | Path, data: bytes) -> None:
    """Create `path` and write `data` to it, as the committer makes a new stream log."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.close(fd)


async def stream_files_after_removal(data: Path, seconds: float) -> dict[str, float]:
    async with open_file_store(data, create=True) as store:
        layout = store.log.layout
    paths = [layout.stream_file(streams.job(str(uuid7()))) for _ in range(REMOVED_FIRST)]
    for path in paths:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    os.sync()
    for path in paths:
        os.unlink(path)
    return await stream_files(data, seconds)


async def stream_files(data: Path, seconds: float) -> dict[str, float]:
    async with open_file_store(data, create=True) as store:
        layout = store.log.layout
    header = framing.file_header(framing.KIND_STREAM)
    logs: list[str] = []

    def create(_: int) -> None:
        path = layout.stream_file(streams.job(str(uuid7())))
        write_new_file(path, header + RECORD)
        logs.append(path)

    def append(n: int) -> None:
        fd = os.open(logs[n % len(logs)], os.O_WRONLY | os.O_APPEND)
        os.write(fd, RECORD)
        os.close(fd)

    result: dict[str, float] = {}
    for name, one in (("new_log", create), ("append_to_log", append)):
        count = 0
        end = time.monotonic() + seconds
        started, cpu = time.perf_counter(), _process_cpu()
        while time.monotonic() < end:
            for _ in range(100):
                one(count)
                count += 1
        result[f"{name}_us"] = (time.perf_counter() - started) / count * 1e6
        result[f"{name}_cpu_us"] = (_process_cpu() - cpu) / count * 1e6
    return result


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(kind: str, data: str, seconds: str) -> None:
    run = {
        "store": store_only,
        "asgi": asgi,
        "files": stream_files,
        "files_after_removal": stream_files_after_removal,
    }[kind]
    result = uvloop.run(run(Path(data), float(seconds)))
    sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
