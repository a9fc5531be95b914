"""Following the feed: a wake-up signal fanned out in memory, and the catch-up loop.

A notice only means "read again from where you are"; correctness comes from reading
from a saved position, so a missed notice costs at most one rescan period.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from eventstore.records import RecordedEvent


class Notifier:
    """A generation counter that wakes every waiter when it moves on."""

    def __init__(self) -> None:
        self.generation = 0
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        """Wake every waiter; call from the event loop's thread."""
        self.generation += 1
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, seen: int, within: float = math.inf) -> None:
        """Return once the generation differs from `seen`, or after `within` seconds."""
        if self.generation != seen:
            return
        if self._event is None:
            self._event = anyio.Event()
        event = self._event
        with anyio.move_on_after(within):
            await event.wait()


async def follow_feed(
    read_all: Callable[[int, int], Awaitable[list[RecordedEvent]]],
    notifier: Notifier,
    from_position: int,
    rescan_seconds: float,
    page: int = 1000,
) -> AsyncIterator[RecordedEvent]:
    """Yield every event from `from_position` on, then wait for notices or the rescan timer."""
    position = from_position
    while True:
        seen = notifier.generation
        events = await read_all(position, page)
        for event in events:
            yield event
            position = event.position + 1
        if len(events) < page:
            await notifier.wait(seen, rescan_seconds)
