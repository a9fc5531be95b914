"""Following the feed: a wake-up signal fanned out in memory, and the catch-up loop.

A notice only means "read again from where you are"; correctness comes from reading
from a saved position, so a missed notice costs at most one rescan period.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from eventstore.records import RecordedEvent


class Notifier:
    """A generation counter that wakes every waiter when it moves on.

    `external` counts the notices about appends this process did not make itself (the
    feed watcher's): a follower may take this process's own appends from `RecentEvents`
    only while no such notice came since its last read of the feed.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.external = 0
        self._event: anyio.Event | None = None

    def notify(self, *, external: bool = False) -> None:
        """Wake every waiter; call from the event loop's thread."""
        self.generation += 1
        self.external += external
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


class RecentEvents:
    """The events this process appended last, by position, as their appends were answered.

    Every follower of the process would otherwise read back from the feed, in a thread,
    the events its own appends just returned. Bounded: a follower further behind than
    `capacity` events reads the feed as before.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self._capacity = capacity
        self._by_position: dict[int, RecordedEvent] = {}
        self._order: deque[int] = deque()

    def add(self, recorded: list[list[RecordedEvent]]) -> None:
        for group in recorded:
            for event in group:
                self._by_position[event.position] = event
                self._order.append(event.position)
        while len(self._order) > self._capacity:
            self._by_position.pop(self._order.popleft(), None)

    def run(self, from_position: int, limit: int) -> list[RecordedEvent]:
        """The events at `from_position` and after it with no gap, at most `limit`."""
        out: list[RecordedEvent] = []
        event = self._by_position.get(from_position)
        while event is not None and len(out) < limit:
            out.append(event)
            event = self._by_position.get(event.position + 1)
        return out

    def clear(self) -> None:
        """Forget every event: after a prune or compaction rewrote the feed."""
        self._by_position.clear()
        self._order.clear()


class SharedReads:
    """Feed pages read once for every follower of this process that asks at the same time.

    A process follows its feed several times over (the read model, the event fan-out, a
    worker), and one notice wakes them all: each would read and decode the same page in
    a thread of its own. A follower asking for a page that is being read already, with
    no notice since that read began, waits for it instead: everything notified before
    the read began is in it, and anything later comes with a notice of its own. Only
    reads in flight are shared; `follow_feed` does not share a rescan's read.
    """

    def __init__(
        self, read_all: Callable[[int, int], Awaitable[list[RecordedEvent]]], notifier: Notifier
    ) -> None:
        self._read_all = read_all
        self._notifier = notifier
        self._flights: dict[tuple[int, int, int], _Flight] = {}

    async def read(self, from_position: int, limit: int) -> list[RecordedEvent]:
        key = (from_position, limit, self._notifier.generation)
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.events is not None:
                return flight.events
            return await self._read_all(from_position, limit)  # the first reader failed
        flight = self._flights[key] = _Flight()
        try:
            flight.events = await self._read_all(from_position, limit)
            return flight.events
        finally:
            del self._flights[key]
            flight.done.set()


class _Flight:
    __slots__ = ("done", "events")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.events: list[RecordedEvent] | None = None


async def follow_feed(
    read_all: Callable[[int, int], Awaitable[list[RecordedEvent]]],
    notifier: Notifier,
    from_position: int,
    rescan_seconds: float,
    page: int = 1000,
    *,
    shared: SharedReads | None = None,
    recent: RecentEvents | None = None,
    written_end: Callable[[], int | None] | None = None,
) -> AsyncIterator[RecordedEvent]:
    """Yield every event from `from_position` on, then wait for notices or the rescan timer.

    With `shared`, reads after a notice may share another follower's read in flight; a
    rescan (the timer ran out with no notice) reads for itself, since it is there for the
    appends whose notice was lost.

    With `recent`, this process's own appends are taken from memory while no notice of
    another process's append came since the last feed read began, and that read reached
    the end of the feed (it returned less than a page). Then every event of another
    process noticed so far is behind `position` already, and a gap in `recent` (an
    append of another process not noticed yet) ends the run: its notice, or the rescan,
    brings a feed read. After a full page the next page is read from the feed again.

    After such a notice, `written_end` (the position the feed is written up to) can still
    spare the read: if `recent` holds every position from `position` up to it, the feed
    holds nothing else, and the notice was of our own appends (a commit process is another
    process to the watcher).
    """
    position = from_position
    rescan = False
    external_at_read = -1  # notifier.external when the last feed read began, if short
    while True:
        seen = notifier.generation
        events: list[RecordedEvent] | None = None  # None: read the feed
        if recent is not None and not rescan:
            external = notifier.external
            run = recent.run(position, page)
            if external == external_at_read:
                events = run or None
            elif written_end is not None and _holds_up_to(run, position, written_end()):
                events, external_at_read = run, external
        if events is None:
            external = notifier.external
            read = read_all if shared is None or rescan else shared.read
            events = await read(position, page)
            # Memory may stand in for the feed only from the feed's end as this read saw
            # it: a full page stops short of appends whose notice came already.
            external_at_read = external if len(events) < page else -1
        for event in events:
            yield event
            position = event.position + 1
        rescan = False
        if len(events) < page:
            await notifier.wait(seen, rescan_seconds)
            rescan = notifier.generation == seen


def _holds_up_to(run: list[RecordedEvent], position: int, end: int | None) -> bool:
    """Whether `run`, the events from `position` on, reaches the feed's written `end`."""
    if end is None:
        return False
    return end <= position or (bool(run) and run[-1].position >= end - 1)
