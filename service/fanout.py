"""One feed follower per process, fanned out in memory to every live event stream.

Each SSE client gets a `Subscription`: a bounded queue the hub fills without ever
waiting. A client that falls `buffer` events behind is dropped (its stream ends, and it
reconnects with `Last-Event-ID`), so one slow reader never slows the others or grows
memory. Per-job subscribers are found by job id and feed subscribers by site (and user),
so routing an event costs O(its own subscribers), not O(all subscribers).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import anyio
from anyio.abc import TaskStatus

from eventstore import EventStore, RecordedEvent
from eventstore.events import JobRequested
from eventstore.streams import job_id_of

log = logging.getLogger("jobtrail.fanout")

BUFFER: Final = 1000
"""Live events a subscriber may have unread before it is dropped."""

OWNERS_CACHED: Final = 100_000
"""Jobs whose site and user the hub remembers (a few MB); older ones are re-read."""

RESTART_SECONDS: Final = 1.0


class Owner(NamedTuple):
    site_id: str
    user_id: str


class Subscription:
    """One client's queue of live events; `start` is the hub's position when it subscribed.

    A plain deque and one future per wait, no timer: waking a thousand streams per event is
    the hot path of the fan-out, and the heartbeat comes from `tick` instead. The future is
    asyncio's (the hub runs in uvicorn's loop): an `anyio.Event` costs four objects and
    about 4 µs more per wake-up, a tenth of a delivery.
    """

    __slots__ = (
        "_hub",
        "job_id",
        "owner",
        "start",
        "dropped",
        "_buffer",
        "_pending",
        "_waiter",
        "_ended",
        "_ticked",
    )

    def __init__(self, hub: FanoutHub, buffer: int, job_id: str | None, owner: Owner | None):
        self._hub = hub
        self.job_id = job_id
        self.owner = owner  # feed subscribers: the site, and the user for members (else "")
        self.start = hub.position
        self.dropped = False
        self._buffer = buffer
        self._pending: deque[RecordedEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._ticked = False

    async def batch(self) -> list[RecordedEvent]:
        """Every queued event at once (a burst becomes one write); [] when `tick` came
        first; EndOfStream once ended and drained. Cancelling it never loses an event."""
        while True:
            if self._pending:
                events = list(self._pending)
                self._pending.clear()
                return events
            if self._ended:
                raise anyio.EndOfStream
            if self._ticked:
                self._ticked = False
                return []
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def receive(self, within: float) -> RecordedEvent | None:
        """The next live event, None if `within` seconds pass first; EndOfStream once
        dropped and drained. (One at a time: for tests and simple readers.)"""
        if not self._pending and not self._ended:
            with anyio.move_on_after(within):
                while not self._pending and not self._ended:
                    waiter = self._waiter = asyncio.get_running_loop().create_future()
                    await waiter
        if self._pending:
            return self._pending.popleft()
        if self._ended:
            raise anyio.EndOfStream
        return None

    def offer(self, recorded: RecordedEvent) -> bool:
        """Queue an event without waiting; False (and the stream ended) if the queue is full."""
        if self._ended:
            return False
        if len(self._pending) >= self._buffer:
            self.dropped = True
            self.end()
            return False
        self._pending.append(recorded)
        self._wake()
        return True

    def tick(self) -> None:
        """Wake the reader with nothing (`batch` returns []): its heartbeat clock."""
        self._ticked = True
        self._wake()

    def end(self) -> None:
        """No more events: the reader drains what it has, then sees EndOfStream."""
        self._ended = True
        self._wake()

    def close(self) -> None:
        """Unsubscribe and release the queue; safe to call more than once."""
        self._hub.remove(self)
        self._ended = True
        self._pending.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # a cancelled wait leaves a cancelled future
                waiter.set_result(None)


@dataclass
class _SiteSubscribers:
    admins: set[Subscription] = field(default_factory=set)
    members: dict[str, set[Subscription]] = field(default_factory=dict)


class FanoutHub:
    """Follows the store from its head at startup and hands each event to its subscribers."""

    def __init__(
        self, store: EventStore, *, buffer: int = BUFFER, owners_cached: int = OWNERS_CACHED
    ) -> None:
        self._store = store
        self._buffer = buffer
        self._owners_cached = owners_cached
        self.position = 0
        """The position of the last event published."""
        self._jobs: dict[str, set[Subscription]] = {}
        self._sites: dict[str, _SiteSubscribers] = {}
        self._owners: OrderedDict[str, Owner] = OrderedDict()

    # -- subscribing ------------------------------------------------------------------

    def subscribe_job(self, job_id: str) -> Subscription:
        """Live events of one job's stream, from the next one the hub publishes."""
        sub = Subscription(self, self._buffer, job_id, None)
        self._jobs.setdefault(job_id, set()).add(sub)
        return sub

    def subscribe_feed(self, site_id: str, user_id: str | None) -> Subscription:
        """Live job events of a site (`user_id` None: every user's, as admins see them)."""
        sub = Subscription(self, self._buffer, None, Owner(site_id, user_id or ""))
        site = self._sites.setdefault(site_id, _SiteSubscribers())
        if user_id is None:
            site.admins.add(sub)
        else:
            site.members.setdefault(user_id, set()).add(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub.job_id is not None:
            subs = self._jobs.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._jobs[sub.job_id]
            return
        assert sub.owner is not None
        site = self._sites.get(sub.owner.site_id)
        if site is None:
            return
        site.admins.discard(sub)
        members = site.members.get(sub.owner.user_id)
        if members is not None:
            members.discard(sub)
            if not members:
                del site.members[sub.owner.user_id]
        if not site.admins and not site.members:
            del self._sites[sub.owner.site_id]

    def _all(self) -> list[Subscription]:
        subs = [sub for job in self._jobs.values() for sub in job]
        for site in self._sites.values():
            subs.extend(site.admins)
            subs.extend(sub for members in site.members.values() for sub in members)
        return subs

    @property
    def subscribers(self) -> int:
        """How many streams are subscribed now (a closed client must not stay counted)."""
        return len(self._all())

    def end_all(self) -> None:
        """End every subscription (at shutdown): their streams end, clients reconnect."""
        for sub in self._all():
            sub.end()

    # -- whose job is it --------------------------------------------------------------

    async def owner_of(self, recorded: RecordedEvent) -> Owner | None:
        """The site and user of a job event's job; None for other streams (or no such job).

        Learnt from `requested` events as they pass; for older jobs the job's stream is
        read once and the answer kept, up to `owners_cached` jobs.
        """
        job_id = job_id_of(recorded.stream)
        if job_id is None:
            return None
        event = recorded.event
        if isinstance(event, JobRequested):
            return self._remember(job_id, Owner(event.site_id, event.user_id))
        owner = self._owners.get(job_id)
        if owner is not None:
            self._owners.move_to_end(job_id)
            return owner
        first = await self._store.read_stream(recorded.stream)
        if first and isinstance(first[0].event, JobRequested):
            requested = first[0].event
            return self._remember(job_id, Owner(requested.site_id, requested.user_id))
        return None

    def _remember(self, job_id: str, owner: Owner) -> Owner:
        self._owners[job_id] = owner
        self._owners.move_to_end(job_id)
        if len(self._owners) > self._owners_cached:
            self._owners.popitem(last=False)
        return owner

    # -- publishing -------------------------------------------------------------------

    async def publish(self, recorded: RecordedEvent) -> None:
        """Hand one feed event to the subscribers it concerns; drop those that are full."""
        job_id = job_id_of(recorded.stream)
        if job_id is not None:
            if isinstance(recorded.event, JobRequested) or self._sites:
                owner = await self.owner_of(recorded)
                site = self._sites.get(owner.site_id) if owner is not None else None
                if owner is not None and site is not None:
                    self._offer(site.admins, recorded)
                    members = site.members.get(owner.user_id)
                    if members is not None:
                        self._offer(members, recorded)
            subs = self._jobs.get(job_id)
            if subs is not None:
                self._offer(subs, recorded)
        self.position = recorded.position

    def _offer(self, subs: set[Subscription], recorded: RecordedEvent) -> None:
        ended = [sub for sub in subs if not sub.offer(recorded)]
        for sub in ended:  # dropped now, or ended (at shutdown) and not yet closed
            if sub.dropped:
                log.info("dropped a live event stream %d events behind", self._buffer)
            self.remove(sub)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the feed from the store's head until cancelled; report started once there.

        A failing read is logged and the follow restarted from the last published position,
        so subscribers lose nothing.
        """
        self.position = await self._store.head()
        task_status.started()
        while True:
            feed = self._store.follow(self.position + 1)
            try:
                async for recorded in feed:
                    await self.publish(recorded)
            except Exception as exc:
                log.warning("feed follower failed, restarting: %r", exc)
            finally:
                await _aclose(feed)
            await anyio.sleep(RESTART_SECONDS)


async def _aclose(feed: AsyncIterator[RecordedEvent]) -> None:
    aclose = getattr(feed, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()
