"""A follower that takes this process's own appends from memory must not then wait for a
notice of another process's append that came already (a full page read stops short)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from eventstore.filestore import FileStore, open_file_store
from eventstore.store import NO_STREAM
from tests.eventstore.helpers import job_stream, progressed, requested

pytestmark = pytest.mark.anyio

LONG_RESCAN = 60.0  # no test here may pass by waiting for a rescan
PAGE = 1000  # follow_feed's default page, as FileStore.follow uses it


async def _external_notice(store: FileStore, before: int, within: float = 5.0) -> None:
    """Wait until the store's feed watcher has noticed something since `before`."""
    with anyio.fail_after(within):
        while store._notifier.external == before:  # noqa: ASYNC110 - a counter, no event
            await anyio.sleep(0.01)
    await anyio.sleep(0.1)  # let a debounced batch of notices finish


async def _watching(store: FileStore, other: FileStore) -> None:
    """Start the store's watcher and make sure it is live: it notices `other`'s append."""
    store.follow()  # the first follower starts the one watcher
    before = store._notifier.external
    deadline = time.monotonic() + 5
    while store._notifier.external == before:
        assert time.monotonic() < deadline, "the feed watcher never noticed an append"
        await other.append(job_stream(), [requested()], NO_STREAM)
        await anyio.sleep(0.2)
    await anyio.sleep(0.1)


async def test_a_noticed_append_behind_a_full_page_is_seen_without_a_rescan(
    tmp_path: Path,
) -> None:
    """A follower more than a page behind reads a full page from the feed, then takes
    the rest of this process's appends from memory. The next position is another
    process's, noticed before that feed read began: no notice will come for it again,
    so the follower must not wait for one (it waits for the rescan)."""
    data = tmp_path / "data"
    async with (
        open_file_store(data, rescan_seconds=LONG_RESCAN) as store,
        open_file_store(data, watch=False) as other,
    ):
        await _watching(store, other)
        for _ in range(11):  # own appends, all in RecentEvents (< 2,048 events)
            await store.append(
                job_stream(), [requested()] + [progressed(i) for i in range(99)], NO_STREAM
            )
        before = store._notifier.external
        theirs = (await other.append(job_stream(), [requested()], NO_STREAM))[0].position
        await _external_notice(store, before)
        head = await store.head()
        assert theirs == head and head > PAGE + 1
        seen: list[int] = []
        started = time.monotonic()
        with anyio.move_on_after(3):
            async for event in store.follow(1):
                seen.append(event.position)
                if event.position == theirs:
                    break
        took = time.monotonic() - started
    assert seen and seen[-1] == theirs, (
        f"stalled at {seen[-1] if seen else None} of {theirs} after {took:.1f}s: waiting "
        "for a notice of another process's append that had come already"
    )
    assert seen == sorted(set(seen))


async def test_a_live_follower_behind_a_burst_sees_the_noticed_append_after_its_own(
    tmp_path: Path,
) -> None:
    """The same, as a live follower whose consumer is busy (a projection saving its
    checkpoint, a slow SSE client) while another process appends a burst, this process
    appends, more than a page in all, and the other appends once more. Waking, the
    follower reads a full page (the burst and part of this process's appends), takes the
    rest of its own from memory, and then waits for a notice of the other's last append
    that came while it was busy."""
    data = tmp_path / "data"
    async with (
        open_file_store(data, rescan_seconds=LONG_RESCAN) as store,
        open_file_store(data, watch=False) as other,
    ):
        await _watching(store, other)
        start = await store.head() + 1
        busy = anyio.Event()
        seen: list[int] = []
        last = 0

        async def follow() -> None:
            async for event in store.follow(start):
                seen.append(event.position)
                if event.position == start:
                    await busy.wait()
                if event.position == last:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await store.append(job_stream(), [requested()], NO_STREAM)
            await anyio.sleep(0.05)  # the follower took it and is busy with it
            # 600 of theirs, then 600 of ours: a page from `start + 1` ends inside ours
            await other.append(
                job_stream(), [requested()] + [progressed(i) for i in range(599)], NO_STREAM
            )
            await store.append(
                job_stream(), [requested()] + [progressed(i) for i in range(599)], NO_STREAM
            )
            before = store._notifier.external
            last = (await other.append(job_stream(), [requested()], NO_STREAM))[0].position
            await _external_notice(store, before)
            busy.set()
            with anyio.move_on_after(3) as timer:
                while not seen or seen[-1] != last:  # noqa: ASYNC110 - polled with a bound
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert not timer.cancelled_caught, (
        f"stalled at {seen[-1]} of {last}: waiting for a notice that had come already"
    )
    assert seen == list(range(start, last + 1))
