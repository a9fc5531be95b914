"""The in-memory store: the reference backend for tests; nothing survives the process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

from eventstore import planning
from eventstore.clock import utcnow
from eventstore.errors import StoreClosed
from eventstore.follow import Notifier, follow_feed
from eventstore.records import AppendTo, RecordedEvent
from eventstore.store import EventStore


class MemoryStore(EventStore):
    """Streams and feed in lists; every operation runs without awaiting, so it is atomic."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._feed: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._ids: dict[str, dict[str, RecordedEvent]] = {}
        self._notifier = Notifier()
        self._closed = False

    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        if self._closed:
            raise StoreClosed("store is closed")
        planning.validate(batch)
        recorded, fresh = planning.plan(
            batch,
            version_of=lambda s: len(self._streams.get(s, ())),
            lookup=lambda s, i: self._ids.get(s, {}).get(i),
            next_position=len(self._feed) + 1,
            now=self._clock(),
        )
        if fresh:
            for events in recorded:
                for e in events:
                    self._streams.setdefault(e.stream, []).append(e)
                    self._ids.setdefault(e.stream, {})[e.id] = e
                    self._feed.append(e)
            self._notifier.notify()
        return recorded

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        planning.validate([AppendTo(stream, [], planning.ANY)])
        return self._streams.get(stream, [])[max(from_version, 1) - 1 :]

    async def stream_version(self, stream: str) -> int:
        planning.validate([AppendTo(stream, [], planning.ANY)])
        return len(self._streams.get(stream, ()))

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        start = max(from_position, 1) - 1
        return self._feed[start : start + max(limit, 0)]

    async def head(self) -> int:
        return len(self._feed)

    def follow(self, from_position: int = 1) -> AsyncIterator[RecordedEvent]:
        return follow_feed(self.read_all, self._notifier, from_position, rescan_seconds=1.0)

    async def aclose(self) -> None:
        self._closed = True
