"""Keeping projections current from the feed, with a checkpoint file to resume from.

The runner applies each feed event once, in order, to every projection it holds (in the
order given), and remembers the last position applied. A checkpoint is that position plus
every projection's state, replaced atomically, so a restart refolds only what came after
it. The feed stays the truth: an unreadable checkpoint, one of another format or one of
another store is ignored and the projections are rebuilt.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

from eventstore.follow import Notifier
from eventstore.records import RecordedEvent
from eventstore.store import EventStore
from projections.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointUnreadable,
    read_checkpoint,
    write_checkpoint,
)

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 1000
RESCAN_SECONDS: Final = 0.1


class Projection(Protocol):
    """A fold over the feed that owns its state and can write it to bytes and back."""

    @property
    def name(self) -> str: ...

    def apply(self, recorded: RecordedEvent) -> object:
        """Fold one event in; never raises (an event half applied would be applied twice)."""

    def dump(self) -> bytes: ...

    def load(self, data: bytes) -> None:
        """Replace the state with a dumped one; raise before changing anything if it is bad."""


async def _read_page(
    store: EventStore, after: int, until: int | None = None, page_size: int = PAGE_SIZE
) -> list[RecordedEvent]:
    """The next feed events after position `after`, none beyond `until` when it is given."""
    limit = page_size if until is None else min(page_size, until - after)
    if limit <= 0:
        return []
    events = await store.read_all(after + 1, limit)
    if until is not None and events and events[-1].position > until:
        events = [e for e in events if e.position <= until]  # the feed has holes (prune)
    return events


async def fold_as_of(
    store: EventStore,
    projections: Sequence[Projection],
    position: int,
    *,
    page_size: int = PAGE_SIZE,
) -> int:
    """Fold the feed from the start up to and including `position` into fresh projections.

    Returns the last position applied (below `position` when that one was pruned or the
    feed ends before it).
    """
    applied = 0
    while events := await _read_page(store, applied, position, page_size):
        for event in events:
            for projection in projections:
                projection.apply(event)
        applied = events[-1].position
    return applied


class ProjectionRunner:
    """Applies the feed to a set of projections, once and in order, from any task."""

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection],
        checkpoint_path: Path | None = None,
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self._store = store
        self._projections = tuple(projections)
        self._path = checkpoint_path
        self._page_size = page_size
        self._position = 0
        self._event_id = ""
        self._advanced = Notifier()
        self._following = False
        self._saving = anyio.Lock()

    @property
    def position(self) -> int:
        """The position of the last event applied; 0 before any."""
        return self._position

    def _apply(self, events: Sequence[RecordedEvent]) -> None:
        # Runs without awaiting, and skips what is applied already, so `run` and
        # `catch_up` may both feed events at once and each event still lands once.
        for event in events:
            if event.position <= self._position:
                continue
            for projection in self._projections:
                projection.apply(event)
            self._position = event.position
            self._event_id = event.id
        self._advanced.notify()

    async def catch_up(self) -> int:
        """Apply everything up to the store's current head; the position reached."""
        head = await self._store.head()
        while self._position < head:
            events = await _read_page(self._store, self._position, None, self._page_size)
            if not events:
                break
            self._apply(events)
        return self._position

    async def run(
        self,
        *,
        checkpoint_every: float | None = None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Catch up, report started, then follow the feed live until cancelled.

        With `checkpoint_every` (seconds), a checkpoint is saved after an event once that
        much time has passed since the last save.
        """
        await self.catch_up()
        self._following = True
        task_status.started()
        # time.monotonic, not anyio.current_time: this runs for every event, and anyio's
        # asks which event loop is running each time (4% of a creation's loop time).
        saved_at = time.monotonic()
        feed = self._store.follow(self._position + 1)
        try:
            async for event in feed:
                self._apply((event,))
                if checkpoint_every is not None:
                    if time.monotonic() - saved_at >= checkpoint_every:
                        await self.save_checkpoint()
                        saved_at = time.monotonic()
        finally:
            self._following = False
            self._advanced.notify()  # waiters catch up by themselves from now on
            aclose = getattr(feed, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def wait_for(self, position: int) -> None:
        """Return once `position` is applied (read-your-writes); bound it with `fail_after`.

        Without a `run` following the feed, it catches up by itself, re-reading every
        `RESCAN_SECONDS` until the store holds that position.
        """
        while self._position < position:
            seen = self._advanced.generation
            if not self._following:
                await self.catch_up()
                if self._position >= position:
                    return
            await self._advanced.wait(seen, math.inf if self._following else RESCAN_SECONDS)

    async def wait_past(self, position: int, within: float) -> None:
        """Return once something after `position` is applied, or after `within` seconds."""
        with anyio.move_on_after(within):
            await self.wait_for(position + 1)

    async def save_checkpoint(self) -> int:
        """Write the state atomically (temp file, fsync, replace, fsync the dir); its position."""
        if self._path is None:
            raise ValueError("this runner has no checkpoint path")
        # Dumped here, between two events, so the states are those of one position exactly.
        position, event_id = self._position, self._event_id
        states = {p.name: p.dump() for p in self._projections}
        async with self._saving:
            await anyio.to_thread.run_sync(write_checkpoint, self._path, position, event_id, states)
        return position

    async def load_checkpoint(self) -> bool:
        """Resume from the checkpoint file if there is a usable one; True if it was loaded."""
        if self._path is None:
            return False
        if self._position != 0:
            raise RuntimeError("load the checkpoint before applying any event")
        try:
            found = await anyio.to_thread.run_sync(read_checkpoint, self._path)
        except CheckpointUnreadable as exc:
            log.warning("ignoring checkpoint %s: %s", self._path, exc)
            return False
        if found is None:
            return False
        checkpoint, states = found
        if not await self._usable(checkpoint):
            return False
        fresh = [p.dump() for p in self._projections]
        try:
            for p in self._projections:
                p.load(states.pop(p.name))  # dropped once loaded: the peak is one state
        except msgspec.DecodeError as exc:
            log.warning("ignoring checkpoint %s whose state is unreadable: %s", self._path, exc)
            for p, state in zip(self._projections, fresh, strict=True):
                p.load(state)
            return False
        self._position = checkpoint.position
        self._event_id = checkpoint.event_id
        self._advanced.notify()
        return True

    async def _usable(self, checkpoint: Checkpoint) -> bool:
        names = {p.name for p in self._projections}
        if checkpoint.format != FORMAT or set(checkpoint.sizes) != names:
            log.warning("ignoring checkpoint %s of another format", self._path)
            return False
        if checkpoint.position == 0:
            return True
        found = await self._store.read_all(checkpoint.position, 1)
        # A pruned event is fine (a later one comes back); another id is another store.
        if not found or (
            found[0].position == checkpoint.position and found[0].id != checkpoint.event_id
        ):
            log.warning("ignoring checkpoint %s: it is not of this store", self._path)
            return False
        return True
