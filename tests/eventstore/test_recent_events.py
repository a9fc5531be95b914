"""Followers take this process's own appends from memory (`RecentEvents`), and still see
every other appender's events, in order, none lost or repeated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from eventstore.filestore import FileStore, open_file_store
from eventstore.follow import Notifier, RecentEvents, follow_feed
from eventstore.records import RecordedEvent, new_event_id
from eventstore.store import NO_STREAM
from tests.eventstore.helpers import count_feed_reads, job_stream, requested

pytestmark = pytest.mark.anyio

LONG_RESCAN = 60.0  # no test here may pass by waiting for a rescan


def recorded(position: int) -> RecordedEvent:
    return RecordedEvent(position, job_stream(), 1, new_event_id(), datetime.now(UTC), requested())


def test_a_run_is_contiguous_from_its_first_position_and_bounded() -> None:
    recent = RecentEvents(capacity=4)
    recent.add([[recorded(1), recorded(2)], [recorded(3)]])
    recent.add([[recorded(5)]])
    assert [e.position for e in recent.run(1, 10)] == [1, 2, 3]  # 4 is not ours: a gap
    assert [e.position for e in recent.run(2, 1)] == [2]
    assert recent.run(4, 10) == []
    recent.add([[recorded(6)]])  # the oldest, 1, makes room
    assert recent.run(1, 10) == []
    assert [e.position for e in recent.run(2, 10)] == [2, 3]
    recent.clear()
    assert recent.run(5, 10) == []


async def _follow(store: FileStore, into: list[int], until: int, from_position: int = 1) -> None:
    async for event in store.follow(from_position):
        into.append(event.position)
        if event.position == until:
            return


@pytest.fixture
async def quiet_store(tmp_path: Path) -> AsyncIterator[FileStore]:
    """A store that hears of other appenders only by its rescan, which never comes here."""
    async with open_file_store(tmp_path / "data", watch=False, rescan_seconds=LONG_RESCAN) as store:
        yield store


async def test_own_appends_reach_followers_without_reading_the_feed(
    quiet_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    reads = count_feed_reads(quiet_store, monkeypatch)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_follow, quiet_store, seen, 30)
            await anyio.sleep(0.05)  # caught up with the empty feed
            before = reads()
            for _ in range(30):
                await quiet_store.append(job_stream(), [requested()], NO_STREAM)
    assert seen == list(range(1, 31))
    assert reads() == before  # an empty feed needs no read either


async def test_another_appenders_events_in_between_are_read_from_the_feed(
    quiet_store: FileStore, tmp_path: Path
) -> None:
    """The other store stands for another process: its events are gaps in this store's
    `RecentEvents`, which its next own append makes it read from the feed."""
    seen: list[int] = []
    async with open_file_store(tmp_path / "data", watch=False) as other:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_follow, quiet_store, seen, 7)
                for appender in (quiet_store, other, quiet_store, other, other, other):
                    await appender.append(job_stream(), [requested()], NO_STREAM)
                    await anyio.sleep(0.01)
                await quiet_store.append(job_stream(), [requested()], NO_STREAM)
    assert seen == list(range(1, 8))


async def test_another_appenders_event_after_its_own_is_read_once_noticed(
    tmp_path: Path,
) -> None:
    """Its own event is the last this store knows; the other's, right after it, comes with
    the feed watcher's notice, well before the rescan."""
    seen: list[int] = []
    async with (
        open_file_store(tmp_path / "data", rescan_seconds=LONG_RESCAN) as store,
        open_file_store(tmp_path / "data", watch=False) as other,
    ):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_follow, store, seen, 3)
                await store.append(job_stream(), [requested()], NO_STREAM)
                await anyio.sleep(0.05)
                await store.append(job_stream(), [requested()], NO_STREAM)
                await other.append(job_stream(), [requested()], NO_STREAM)
    assert seen == [1, 2, 3]


async def test_a_notice_from_elsewhere_sends_the_next_read_to_the_feed() -> None:
    """Position 2 is ours (in `RecentEvents`), 3 another process's, both written when
    the follower wakes: had it taken 2 from memory it would wait for a notice that
    came already, and see 3 only at the rescan."""
    notifier = Notifier()
    feed = [recorded(1)]
    recent = RecentEvents()

    async def read_all(from_position: int, limit: int) -> list[RecordedEvent]:
        return [e for e in feed if e.position >= from_position][:limit]

    seen: list[int] = []

    async def follow() -> None:
        async for event in follow_feed(read_all, notifier, 1, LONG_RESCAN, recent=recent):
            seen.append(event.position)
            if event.position == 3:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.01)  # read 1 from the feed, waits
            ours, theirs = recorded(2), recorded(3)
            feed += [ours, theirs]
            notifier.notify(external=True)  # the watcher saw the feed grow
            recent.add([[ours]])
            notifier.notify()  # our own append was answered
    assert seen == [1, 2, 3]


async def test_a_notice_of_our_own_writes_needs_no_read() -> None:
    """The watcher also sees this process's own writes (a commit process is another
    process): while memory holds every position up to where the feed is written, the
    feed holds nothing more to read; once it is written further, it is read."""
    notifier = Notifier()
    recent = RecentEvents()
    feed: list[RecordedEvent] = []
    end: list[int | None] = [1]
    reads: list[int] = []

    async def read_all(from_position: int, limit: int) -> list[RecordedEvent]:
        reads.append(from_position)
        return [e for e in feed if e.position >= from_position][:limit]

    seen: list[int] = []

    async def follow() -> None:
        async for event in follow_feed(
            read_all, notifier, 1, LONG_RESCAN, recent=recent, written_end=lambda: end[0]
        ):
            seen.append(event.position)

    def append(position: int, ours: bool) -> None:
        event = recorded(position)
        feed.append(event)
        end[0] = position + 1
        notifier.notify(external=True)  # the watcher saw the feed grow
        if ours:
            recent.add([[event]])
            notifier.notify()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.01)  # an empty feed: nothing to read
            for position in (1, 2, 3):
                append(position, ours=True)
                await anyio.sleep(0.01)
            assert (seen, reads) == ([1, 2, 3], [])
            append(4, ours=False)
            await anyio.sleep(0.01)
            assert (seen, reads) == ([1, 2, 3, 4], [4])
            end[0] = None  # a mark caught mid-write: read, to be sure
            append(5, ours=True)
            end[0] = None
            notifier.notify(external=True)
            await anyio.sleep(0.01)
            assert (seen, reads) == ([1, 2, 3, 4, 5], [4, 5])
            tg.cancel_scope.cancel()


async def test_a_store_watching_its_own_appends_hardly_reads_the_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher's notices of a store's own appends are checked against the feed's
    mark: only one that comes while an append is written but not yet answered reads."""
    seen: list[int] = []
    async with open_file_store(tmp_path / "data", rescan_seconds=LONG_RESCAN) as store:
        reads = count_feed_reads(store, monkeypatch)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_follow, store, seen, 20)
                await anyio.sleep(0.05)
                for _ in range(20):
                    await store.append(job_stream(), [requested()], NO_STREAM)
                    await anyio.sleep(0.03)  # the watcher's notice comes meanwhile
    assert seen == list(range(1, 21))
    assert reads() <= 4  # one for each notice without the mark: about 20
