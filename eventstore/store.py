"""The event store interface every backend implements, with the guarantees it gives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Final, Self

from eventstore.events import Event
from eventstore.records import AppendTo, NewEvent, RecordedEvent, as_new_events

ANY: Final = -1
"""Expected version that accepts any current version (no concurrency check)."""

NO_STREAM: Final = 0
"""Expected version of a stream that has no events yet."""


class EventStore(ABC):
    """Named append-only streams plus one global feed, shared by every process.

    Guarantees, in every backend:
    - An append returns only after its events are durable; if it raises, none of them
      were acknowledged (a StorageError leaves nothing half-written).
    - The events of one `append_many` call land all together or not at all, also across
      a crash at any instant.
    - Versions are dense per stream (1, 2, 3...); positions are never reused and give one
      total order that every reader sees. They are dense except where `prune` removed
      streams: those positions are holes.
    - A stale expected version raises `WrongExpectedVersion`, whichever backend.
    - Re-appending events whose ids are stored already is a no-op that returns the
      originally recorded events (safe client retries).
    - A reader never sees a damaged or partly written event.
    """

    async def append(
        self, stream: str, events: Sequence[Event | NewEvent], expected_version: int
    ) -> list[RecordedEvent]:
        """Append events to one stream; see `append_many`."""
        (recorded,) = await self.append_many(
            [AppendTo(stream, as_new_events(events), expected_version)]
        )
        return recorded

    @abstractmethod
    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        """Append to several streams at once, all or nothing; the recorded events per stream.

        Raises WrongExpectedVersion if any stream is not at its expected version (`ANY`
        skips the check), InvalidId for a malformed stream name, StorageError when the
        store cannot be written.
        """

    @abstractmethod
    async def prune(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        """Append tombstones and remove the streams they name, all or nothing (retention).

        Every stream a tombstone removes (`retention.removed_stream`) must be in `batch`
        with no events and the exact version it was read at: one that moved on raises
        WrongExpectedVersion and nothing is removed. Afterwards a removed stream reads as
        empty and its events leave the feed: their positions become holes that `read_all`
        and `follow` skip; no other event changes or moves. Raises InvalidPrune for a batch
        without tombstones or checks, and what `append_many` raises.
        """

    async def prune_deferred(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        """`prune`, but taking the events out of the backend's files may wait for `compact`.

        For a backlog pruned in many batches: each file is rewritten once, at the end.
        Until then the removed events may still be read from the feed, before their
        tombstones. By default (a wrapper, a backend with nothing to defer) it is `prune`.
        """
        return await self.prune(batch)

    async def compact(self) -> None:
        """Finish what `prune_deferred` left; a store with nothing left does nothing."""
        return None

    @abstractmethod
    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        """The stream's events from `from_version` on; empty for a stream never written."""

    @abstractmethod
    async def stream_version(self, stream: str) -> int:
        """The stream's current version: 0 when it has no events."""

    @abstractmethod
    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events of the global feed from `from_position` on, in order."""

    @abstractmethod
    async def head(self) -> int:
        """The last position given out (perhaps a prune's hole), 0 when the store is empty."""

    @abstractmethod
    def follow(self, from_position: int = 1) -> AsyncIterator[RecordedEvent]:
        """Catch up from `from_position`, then follow live: every event once, in order.

        Sees events appended by other processes too, within the backend's wake-up
        latency (a missed notice costs at most one rescan period).
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release the store's resources; pending appends finish first."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
