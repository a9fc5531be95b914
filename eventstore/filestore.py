"""The embedded default store: FileLog's files, with async calls and a live feed.

Blocking file work runs in threads, never on the event loop. One watchfiles watcher per
store, started by the first follower, wakes every follower in this process when another
process appends; followers also rescan on a short timer, since notices can be missed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, Protocol

import anyio
import watchfiles

from eventstore import planning
from eventstore.clock import utcnow
from eventstore.commit_process import CommitProcess
from eventstore.errors import StoreClosed
from eventstore.filelog import MAX_BATCH, FileLog, Request, die
from eventstore.follow import Notifier, RecentEvents, SharedReads, follow_feed
from eventstore.records import AppendTo, RecordedEvent
from eventstore.store import EventStore

log = logging.getLogger("jobtrail.store")

WATCH_STEP_MS = 5  # wake-up latency is one to two steps after a change
WATCH_DEBOUNCE_MS = 50
RESCAN_SECONDS = 0.5


class FileStore(EventStore):
    """An EventStore over a data directory; open it with `open_file_store`."""

    def __init__(
        self,
        log_: FileLog,
        notifier: Notifier,
        rescan_seconds: float,
        start_watcher: Callable[[], None] | None,
        committer: Committer | None = None,
    ) -> None:
        self.log = log_
        self._notifier = notifier
        self._rescan = rescan_seconds
        self._start_watcher = start_watcher
        self._limiter = anyio.CapacityLimiter(64)
        self._committer = committer or _Committer(log_, asyncio.get_running_loop())
        self._shared = SharedReads(self.read_all, notifier)
        self._recent = RecentEvents()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        planning.validate(batch)
        recorded = await self._committer.submit(batch)
        self._recent.add(recorded)
        self._notifier.notify()
        return recorded

    async def prune(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        planning.validate(batch)
        recorded: list[list[RecordedEvent]] = await self._run(self.log.prune, batch)
        self._recent.clear()
        self._notifier.notify()
        return recorded

    async def prune_deferred(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        planning.validate(batch)
        recorded: list[list[RecordedEvent]] = await self._run(
            partial(self.log.prune, batch, rewrite=False)
        )
        self._recent.clear()
        self._notifier.notify()
        return recorded

    async def compact(self) -> None:
        await self._run(self.log.compact)
        self._recent.clear()
        self._notifier.notify()

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        self.log.layout.stream_path(stream)  # validates the name before any I/O
        events: list[RecordedEvent] = await self._run(self.log.read_stream, stream, from_version)
        return events

    async def stream_version(self, stream: str) -> int:
        self.log.layout.stream_path(stream)
        version: int = await self._run(self.log.stream_version, stream)
        return version

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        events: list[RecordedEvent] = await self._run(self.log.read_all, from_position, limit)
        return events

    async def head(self) -> int:
        position: int = await self._run(self.log.head)
        return position

    def follow(self, from_position: int = 1) -> AsyncIterator[RecordedEvent]:
        if self._start_watcher is not None:  # the first follower starts the one watcher
            self._start_watcher()
            self._start_watcher = None
        return follow_feed(
            self.read_all,
            self._notifier,
            from_position,
            self._rescan,
            shared=self._shared,
            recent=self._recent,
            written_end=self.log.written_end,
        )

    async def aclose(self) -> None:
        await self._committer.aclose()
        await self._run(self.log.close)


@asynccontextmanager
async def open_file_store(
    root: Path | str,
    *,
    create: bool = True,
    readonly: bool = False,
    watch: bool = True,
    rescan_seconds: float = RESCAN_SECONDS,
    clock: Callable[[], datetime] = utcnow,
    on_fatal: Callable[[BaseException], NoReturn] = die,
    commit_process: bool = False,
) -> AsyncIterator[FileStore]:
    """Open (and, with `create`, initialise) a data directory; close it on exit.

    With `commit_process`, the event loop's appends are committed by a child process
    (`commit_process.CommitProcess`) rather than a thread of this one: for servers, whose
    busy event loop would otherwise hold the GIL the committer thread needs between calls.
    """
    file_log = await anyio.to_thread.run_sync(
        partial(
            FileLog, Path(root), create=create, readonly=readonly, clock=clock, on_fatal=on_fatal
        )
    )
    notifier = Notifier()
    stop = anyio.Event()
    store: FileStore | None = None
    try:
        async with anyio.create_task_group() as tg:

            def start_watcher() -> None:
                tg.start_soon(_watch_feed, file_log.layout.feed_dir, notifier, stop)

            committer = (
                CommitProcess(Path(root), on_fatal) if commit_process and not readonly else None
            )
            store = FileStore(
                file_log, notifier, rescan_seconds, start_watcher if watch else None, committer
            )
            try:
                yield store
            finally:
                stop.set()
    finally:
        if store is not None:
            await store.aclose()
        else:
            await anyio.to_thread.run_sync(file_log.close)


async def _watch_feed(feed_dir: Path, notifier: Notifier, stop: anyio.Event) -> None:
    """Turn file-system notices about the feed into wake-ups; restart the watcher on errors."""
    while not stop.is_set():
        try:
            async for _ in watchfiles.awatch(
                feed_dir,
                watch_filter=lambda _change, path: path.endswith(".log"),
                step=WATCH_STEP_MS,
                debounce=WATCH_DEBOUNCE_MS,
                rust_timeout=1000,
                stop_event=stop,
                recursive=False,
            ):
                notifier.notify(external=True)
        except Exception as exc:  # a watcher limit or a vanished path: rescans still cover us
            log.warning("feed watcher failed, relying on rescans: %r", exc)
            with anyio.move_on_after(RESCAN_SECONDS * 4):
                await stop.wait()


class Committer(Protocol):
    """Who commits the appends of this process's event loop."""

    async def submit(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]: ...

    async def aclose(self) -> None: ...


class _Committer:
    """One thread that group-commits the appends of this process's event loop.

    A thread hop costs about as much as an fdatasync on these machines, so appends are
    handed over with one queue put and answered with one loop callback per batch, as
    soon as the batch is durable (the thread then writes the stream logs).
    """

    def __init__(self, file_log: FileLog, loop: asyncio.AbstractEventLoop) -> None:
        self._log = file_log
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[Request, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._stopped = False
        self._stopping = threading.Lock()  # no request may be queued behind the stop sentinel
        self._thread = threading.Thread(target=self._run, name="jobtrail-commit", daemon=True)
        self._thread.start()

    async def submit(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        request = Request(batch)
        done: asyncio.Future[None] = self._loop.create_future()
        with self._stopping:
            if self._stopped:
                raise StoreClosed("store is closed")
            self._queue.put((request, done))
        await done
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._stop)

    def _stop(self) -> None:
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            self._log.commit([item[0]], more=partial(self._drain, items))
            # The answer is the last thing before blocking again, so the woken loop
            # finds the GIL free instead of waiting for this thread to let go of it.
            self._loop.call_soon_threadsafe(_resolve, [f for _, f in items])

    def _drain(self, items: list[tuple[Request, asyncio.Future[None]]]) -> list[Request]:
        """Take what else is queued (up to a batch), once the lock is held."""
        taken = []
        while len(items) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            items.append(item)
            taken.append(item[0])
        return taken


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for f in futures:
        if not f.done():
            f.set_result(None)
