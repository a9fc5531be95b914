"""The store contract: every backend gives the same answers (STYLE.md, eventsourcing)."""

from __future__ import annotations

import anyio
import pytest

from eventstore import (
    ANY,
    NO_STREAM,
    AppendTo,
    EventStore,
    InvalidId,
    WrongExpectedVersion,
    new,
    streams,
)
from eventstore.events import QuotaReserved
from eventstore.planning import DuplicateEventIds
from tests.eventstore.helpers import job_stream, progressed, requested

pytestmark = pytest.mark.anyio


async def test_append_then_read_back(store: EventStore) -> None:
    s = job_stream()
    first = await store.append(s, [requested()], NO_STREAM)
    more = await store.append(s, [progressed(1), progressed(2)], 1)
    assert [e.version for e in first + more] == [1, 2, 3]
    assert [e.position for e in first + more] == [1, 2, 3]
    got = await store.read_stream(s)
    assert got == first + more
    assert await store.read_stream(s, from_version=3) == more[1:]
    assert await store.stream_version(s) == 3
    assert got[0].type == "requested" and got[1].type == "progressed"


async def test_unknown_stream_is_empty(store: EventStore) -> None:
    assert await store.read_stream(job_stream()) == []
    assert await store.stream_version(job_stream()) == 0


async def test_stale_expected_version_conflicts(store: EventStore) -> None:
    s = job_stream()
    await store.append(s, [requested()], NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append(s, [progressed(1)], NO_STREAM)
    assert info.value.actual == 1
    with pytest.raises(WrongExpectedVersion):
        await store.append(s, [progressed(1)], 5)
    assert await store.stream_version(s) == 1


async def test_any_skips_the_check(store: EventStore) -> None:
    s = job_stream()
    await store.append(s, [requested()], ANY)
    await store.append(s, [progressed(1)], ANY)
    assert await store.stream_version(s) == 2


async def test_retried_append_is_a_noop_returning_the_original(store: EventStore) -> None:
    s = job_stream()
    events = [new(requested()), new(progressed(1))]
    original = await store.append(s, events, NO_STREAM)
    await store.append(job_stream(), [requested()], NO_STREAM)
    again = await store.append(s, events, NO_STREAM)
    assert again == original
    again_any = await store.append(s, events, ANY)
    assert again_any == original
    assert await store.stream_version(s) == 2
    assert await store.head() == 3


async def test_multi_stream_append_is_all_or_nothing(store: EventStore) -> None:
    job, usage = job_stream(), streams.usage("s1", "2026-11")
    await store.append(usage, [QuotaReserved(job_id="x")], NO_STREAM)
    head = await store.head()
    with pytest.raises(WrongExpectedVersion):
        await store.append_many(
            [
                AppendTo(job, [new(requested())], NO_STREAM),
                AppendTo(usage, [new(QuotaReserved(job_id="y"))], 0),  # stale
            ]
        )
    assert await store.read_stream(job) == []
    assert await store.head() == head
    ok = await store.append_many(
        [
            AppendTo(job, [new(requested())], NO_STREAM),
            AppendTo(usage, [new(QuotaReserved(job_id="y"))], 1),
        ]
    )
    assert [g[0].version for g in ok] == [1, 2]
    assert [g[0].position for g in ok] == [head + 1, head + 2]


async def test_empty_append_checks_a_version_only(store: EventStore) -> None:
    site = streams.site("s1")
    job = job_stream()
    with pytest.raises(WrongExpectedVersion):
        await store.append_many(
            [AppendTo(job, [new(requested())], NO_STREAM), AppendTo(site, [], 3)]
        )
    await store.append_many([AppendTo(job, [new(requested())], NO_STREAM), AppendTo(site, [], 0)])
    assert await store.stream_version(job) == 1


async def test_invalid_names_and_ids_are_refused(store: EventStore) -> None:
    for bad in [
        "job:../../etc/passwd",
        "job:",
        "nope:1",
        "usage:s1:2026-13",
        "lead:a b:c",
        "job:0193ABCD-0000-7000-8000-000000000000",
        "site:" + "x" * 65,
        "site:a\x00",
    ]:
        with pytest.raises(InvalidId):
            await store.append(bad, [requested()], ANY)
        with pytest.raises(InvalidId):
            await store.read_stream(bad)
    e = new(requested())
    with pytest.raises(DuplicateEventIds):
        await store.append(job_stream(), [e, e], NO_STREAM)
    assert await store.head() == 0


async def test_read_all_pages_in_order(store: EventStore) -> None:
    names = [job_stream() for _ in range(7)]
    for i, s in enumerate(names):
        await store.append(s, [requested(), progressed(i)], NO_STREAM)
    assert await store.head() == 14
    seen = []
    position = 1
    while page := await store.read_all(position, 3):
        seen.extend(page)
        position = page[-1].position + 1
    assert [e.position for e in seen] == list(range(1, 15))
    assert await store.read_all(15) == []
    assert await store.read_all(5, 0) == []


async def test_follow_catches_up_then_sees_live_events(store: EventStore) -> None:
    s = job_stream()
    await store.append(s, [requested()], NO_STREAM)
    got = []

    async def consume() -> None:
        async for e in store.follow(1):
            got.append(e.position)
            if len(got) == 4:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for i in range(3):
                await anyio.sleep(0.01)
                await store.append(s, [progressed(i)], i + 1)
    assert got == [1, 2, 3, 4]


async def test_concurrent_appenders_in_one_process(store: EventStore) -> None:
    shared = job_stream()
    await store.append(shared, [requested()], NO_STREAM)
    own = [job_stream() for _ in range(16)]
    wins: list[int] = []

    async def racer(name: str) -> None:
        await store.append(name, [requested()], NO_STREAM)
        for _ in range(5):
            while True:
                version = await store.stream_version(shared)
                try:
                    r = await store.append(shared, [progressed(version)], version)
                except WrongExpectedVersion:
                    continue
                wins.append(r[0].version)
                break

    async with anyio.create_task_group() as tg:
        for name in own:
            tg.start_soon(racer, name)
    assert sorted(wins) == list(range(2, 2 + 16 * 5))
    events = await store.read_all(1, 10_000)
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    assert [e.version for e in await store.read_stream(shared)] == list(range(1, 82))
