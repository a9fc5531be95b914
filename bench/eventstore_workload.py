"""What the event-store benchmark runs, in the parent and in its children alike.

Appenders use the public store API exactly as the service will: one task per job stream,
one event per append, each with the exact expected version. The bare loops are the
baselines: what the same disk and the same decoder do with no store around them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

import anyio

from eventstore import streams
from eventstore.events import (
    Event,
    JobCompleted,
    JobProgressed,
    JobRequested,
    JobStarted,
)
from eventstore.filelog import FEED_START, FileLog, Request
from eventstore.records import AppendTo, RecordedEvent, new, uuid7
from eventstore.store import NO_STREAM, EventStore
from projections.jobs import JobTable

MAX_APPENDS: Final = 5_000_000  # per task and window: a bound far above any disk we know
MESSAGE: Final = "analysing page"


def requested(n: int = 0) -> JobRequested:
    return JobRequested(
        job_type="document_analysis",
        site_id=f"site-{n % 50}",
        user_id=f"user-{n % 1000}",
        params={"document_id": f"doc-{n}", "language": "en"},
    )


def progressed(version: int, message: str = MESSAGE) -> JobProgressed:
    return JobProgressed(progress=version % 100, message=message)


# -- the job projection -----------------------------------------------------------------


class JobProjection(Protocol):
    """What the benchmark needs of the job status projection (projections/jobs.py)."""

    def apply(self, recorded: RecordedEvent) -> object: ...

    def __len__(self) -> int: ...


def new_job_projection() -> JobProjection:
    """An empty job status projection: the one place that names its class."""
    return JobTable()


# -- appenders --------------------------------------------------------------------------


@dataclass(slots=True)
class Writer:
    """One appender's job stream and the version it last wrote."""

    stream: str
    version: int


async def prepare(store: EventStore, count: int) -> list[Writer]:
    """Create `count` job streams, each with its JobRequested, for appenders to continue."""
    writers = []
    for n in range(count):
        stream = streams.job(str(uuid7()))
        (recorded,) = await store.append(stream, [requested(n)], NO_STREAM)
        writers.append(Writer(stream, recorded.version))
    return writers


async def append_window(
    store: EventStore, writers: Sequence[Writer], start: float, end: float
) -> int:
    """Every writer appends one event at a time from `start` to `end` (time.monotonic).

    Returns the appends that completed inside the window; one still in flight at `end`
    is not counted.
    """
    counts = [0] * len(writers)

    async def run(i: int, w: Writer) -> None:
        await anyio.sleep(max(0.0, start - time.monotonic()))
        done = 0
        while done < MAX_APPENDS and time.monotonic() < end:
            recorded = await store.append(w.stream, [progressed(w.version)], w.version)
            w.version = recorded[-1].version
            if time.monotonic() > end:
                break
            done += 1
        counts[i] = done

    async with anyio.create_task_group() as tg:
        for i, w in enumerate(writers):
            tg.start_soon(run, i, w)
    return sum(counts)


def feed_bytes(root: Path) -> int:
    """Bytes of records in a data directory's feed (its file header left out)."""
    return (root / "feed" / "feed.log").stat().st_size - FEED_START


def bare_fdatasync(directory: Path, record_size: int, seconds: float) -> float:
    """Appends/s of a plain loop: os.write of one record to an O_APPEND file, fdatasync."""
    path = directory / "bare.log"
    record = os.urandom(record_size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    try:
        n = 0
        start = time.monotonic()
        end = start + seconds
        now = start
        while n < MAX_APPENDS and now < end:
            os.write(fd, record)
            os.fdatasync(fd)
            n += 1
            now = time.monotonic()
        return n / (now - start)
    finally:
        os.close(fd)
        path.unlink()


# -- the replay store -------------------------------------------------------------------


def job_history(n: int, now: datetime) -> list[Event]:
    """A finished job's five events: requested, started, progressed twice, completed."""
    return [
        requested(n),
        JobStarted(attempt=1, worker_id="worker-1", lease_expires_at=now + timedelta(minutes=5)),
        JobProgressed(progress=30, message="reading"),
        JobProgressed(progress=70, message="analysing"),
        JobCompleted(result={"score": n % 100, "label": "good"}),
    ]


def build_jobs(
    root: Path,
    jobs: int,
    deadline: float,
    chunk: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fill a new data directory with `jobs` finished jobs; the events written.

    One event per feed record, as the service's one-event appends leave them, and the
    jobs of a chunk interleaved the way concurrent jobs are. Each chunk is one group
    commit of one request per event (a single fdatasync), so building takes seconds.
    """
    log = FileLog(root)
    written = 0
    try:
        now = datetime.now(UTC)
        for base in range(0, jobs, chunk):
            if time.monotonic() > deadline:
                raise TimeoutError(f"building the replay store took too long ({base} jobs)")
            size = min(chunk, jobs - base)
            names = [streams.job(str(uuid7())) for _ in range(size)]
            histories = [job_history(base + i, now) for i in range(size)]
            requests = [
                Request([AppendTo(names[i], [new(histories[i][step])], step)])
                for step in range(5)
                for i in range(size)
            ]
            log.commit(requests)
            for r in requests:
                if r.error is not None:
                    raise r.error
            written += len(requests)
            if progress is not None:
                progress(base + size)
    finally:
        log.close()
    return written


def read_decode(log: FileLog) -> tuple[int, float]:
    """Read and decode every feed record into RecordedEvents, nothing else: (events, s)."""
    start = time.perf_counter()
    n = 0
    for batch in log.iter_all(1):
        n += len(batch)
    return n, time.perf_counter() - start


def replay(log: FileLog) -> tuple[int, float, JobProjection]:
    """The same reading, plus folding every event into a fresh job projection."""
    start = time.perf_counter()
    jobs = new_job_projection()
    apply = jobs.apply
    n = 0
    for batch in log.iter_all(1):
        for event in batch:
            apply(event)
        n += len(batch)
    return n, time.perf_counter() - start, jobs


def read_pages(log: FileLog, seconds: float, page: int = 1000) -> dict[str, float]:
    """Page through the feed with `read_all(position, page)`, as a projection runner does.

    Bounded by `seconds`, so a reader that slows down as the feed grows is measured, not
    waited for: events read, events/s, and the time of the first and the last page.
    """
    start = time.perf_counter()
    end = start + seconds
    position, n, first, last = 1, 0, 0.0, 0.0
    while time.perf_counter() < end:
        t = time.perf_counter()
        events = log.read_all(position, page)
        last = time.perf_counter() - t
        if not events:
            break
        first = first or last
        n += len(events)
        position = events[-1].position + 1
    elapsed = time.perf_counter() - start
    return {
        "events": n,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "first_page_ms": first * 1000,
        "last_page_ms": last * 1000,
    }
