"""The in-memory store: the reference backend for tests; nothing survives the process."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

from eventstore import planning, retention
from eventstore.clock import utcnow
from eventstore.errors import StoreClosed
from eventstore.follow import Notifier, follow_feed
from eventstore.records import AppendTo, RecordedEvent
from eventstore.store import EventStore


class MemoryStore(EventStore):
    """Streams and feed in lists; every operation runs without awaiting, so it is atomic."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._feed: list[RecordedEvent] = []  # in position order; pruned ones taken out
        self._next_position = 1
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._ids: dict[str, dict[str, RecordedEvent]] = {}
        self._notifier = Notifier()
        self._closed = False

    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        retention.refuse_tombstones(batch)
        return self._append(batch)

    def _append(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        if self._closed:
            raise StoreClosed("store is closed")
        planning.validate(batch)
        recorded, fresh = planning.plan(
            batch,
            version_of=lambda s: len(self._streams.get(s, ())),
            lookup=lambda s, i: self._ids.get(s, {}).get(i),
            next_position=self._next_position,
            now=self._clock(),
        )
        if fresh:
            for events in recorded:
                for e in events:
                    self._streams.setdefault(e.stream, []).append(e)
                    self._ids.setdefault(e.stream, {})[e.id] = e
                    self._feed.append(e)
                    self._next_position = e.position + 1
            self._notifier.notify()
        return recorded

    async def prune(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        planning.validate(batch)
        removes = set(retention.removed_streams(batch))
        fresh = self._next_position
        retention.tombstones_only(batch)
        recorded = self._append(batch)  # no await: atomic
        if any(e.position >= fresh for events in recorded for e in events):
            for stream in removes:
                self._streams.pop(stream, None)
                self._ids.pop(stream, None)
            self._feed = [e for e in self._feed if e.stream not in removes]
        return recorded

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        planning.validate([AppendTo(stream, [], planning.ANY)])
        return self._streams.get(stream, [])[max(from_version, 1) - 1 :]

    async def stream_version(self, stream: str) -> int:
        planning.validate([AppendTo(stream, [], planning.ANY)])
        return len(self._streams.get(stream, ()))

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        start = bisect.bisect_left(self._feed, max(from_position, 1), key=_position)
        return self._feed[start : start + max(limit, 0)]

    async def head(self) -> int:
        return self._next_position - 1

    def follow(self, from_position: int = 1) -> AsyncIterator[RecordedEvent]:
        return follow_feed(self.read_all, self._notifier, from_position, rescan_seconds=1.0)

    async def aclose(self) -> None:
        self._closed = True


def _position(event: RecordedEvent) -> int:
    return event.position
