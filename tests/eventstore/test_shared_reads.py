"""Followers of one process share feed reads that are in flight, and miss nothing by it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from eventstore.filestore import open_file_store
from eventstore.follow import Notifier, SharedReads, follow_feed
from eventstore.records import RecordedEvent
from eventstore.store import NO_STREAM
from tests.eventstore.helpers import count_feed_reads, job_stream, requested

pytestmark = pytest.mark.anyio

APPENDS = 20


async def _reads_while_following(
    data: Path, followers: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[list[int]]]:
    """Feed reads made while `followers` follow APPENDS appends, and what each saw.

    The appends are another store's, as another process's would be: a store's own reach
    its followers from memory (test_recent_events.py), the feed watcher's notices do not.
    """
    async with open_file_store(data) as store, open_file_store(data, watch=False) as other:
        reads = count_feed_reads(store, monkeypatch)
        seen: list[list[int]] = [[] for _ in range(followers)]

        async def follow(into: list[int]) -> None:
            async for event in store.follow(1):
                into.append(event.position)
                if len(into) == APPENDS:
                    return

        async with anyio.create_task_group() as tg:
            for into in seen:
                tg.start_soon(follow, into)
            await anyio.sleep(0.05)  # all wait at the head
            before = reads()
            for _ in range(APPENDS):
                await other.append(job_stream(), [requested()], NO_STREAM)
                await anyio.sleep(0.03)  # a notice each, mostly
        return reads() - before, seen


async def test_followers_woken_together_read_each_page_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone, _ = await _reads_while_following(tmp_path / "one", 1, monkeypatch)
    together, seen = await _reads_while_following(tmp_path / "three", 3, monkeypatch)
    assert seen == [list(range(1, APPENDS + 1))] * 3
    assert together <= alone + APPENDS // 2  # not three times as many


async def test_a_read_begun_before_a_notice_is_not_shared_after_it() -> None:
    notifier = Notifier()
    started = anyio.Event()
    release = anyio.Event()
    calls: list[int] = []

    async def read_all(from_position: int, limit: int) -> list[RecordedEvent]:
        calls.append(notifier.generation)
        started.set()
        await release.wait()
        return []

    shared = SharedReads(read_all, notifier)
    async with anyio.create_task_group() as tg:
        tg.start_soon(shared.read, 1, 10)
        await started.wait()
        tg.start_soon(shared.read, 1, 10)  # same generation: joins the read in flight
        await anyio.sleep(0.01)
        notifier.notify()  # an append was notified: a later reader must read again
        tg.start_soon(shared.read, 1, 10)
        await anyio.sleep(0.01)
        release.set()
    assert calls == [0, 1]


async def test_a_failed_read_is_retried_by_each_waiting_follower() -> None:
    notifier = Notifier()
    started = anyio.Event()
    calls = 0

    async def read_all(from_position: int, limit: int) -> list[RecordedEvent]:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await anyio.sleep(0.02)
            raise OSError("disk went away")
        return []

    shared = SharedReads(read_all, notifier)
    answers: list[object] = []

    async def reader() -> None:
        try:
            answers.append(await shared.read(1, 10))
        except OSError as exc:
            answers.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await started.wait()
        tg.start_soon(reader)
    assert [type(a) for a in answers] == [OSError, list]
    assert calls == 2


async def test_reads_after_a_notice_are_shared_and_rescans_read_for_themselves() -> None:
    """A rescan is there for appends whose notice was lost: joining a read that began
    before such an append would miss it for another rescan period."""
    notifier = Notifier()
    calls: list[str] = []

    async def own(from_position: int, limit: int) -> list[RecordedEvent]:
        calls.append("own")
        return []

    async def via_shared(from_position: int, limit: int) -> list[RecordedEvent]:
        calls.append("shared")
        return []

    feed = follow_feed(own, notifier, 1, 0.01, shared=SharedReads(via_shared, notifier))

    async def consume() -> None:
        async for _ in feed:
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.1)  # the first read, then rescans only
        notifier.notify()
        await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    assert calls[0] == "shared"  # the first read: nothing was missed before it
    rescans = calls[1 : calls.index("shared", 1)]
    assert len(rescans) >= 3 and set(rescans) == {"own"}
