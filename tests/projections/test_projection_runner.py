"""The runner: catch-up, live following, read-your-writes, checkpoints, and as-of folds."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec
import pytest

from eventstore import ANY, MemoryStore
from eventstore.events import AnyEvent, LeadSaved, QuotaReserved, QuotaSet
from projections import (
    CheckpointUnreadable,
    JobTable,
    ProjectionRunner,
    ReadModel,
    fold_as_of,
    pack_checkpoint,
    unpack_checkpoint,
    write_atomically,
)

from .builders import (
    append_all,
    completed,
    job_id,
    job_stream,
    make_store,
    rebuild,
    requested,
    started,
)

pytestmark = pytest.mark.anyio

EVENTS: list[tuple[str, AnyEvent]] = [
    (job_stream(1), requested()),
    ("site:site_a", QuotaSet(limit=5, tier="pro", from_month="2026-11")),
    ("usage:site_a:2026-11", QuotaReserved(job_id=job_id(1))),
    ("lead:site_a:lead_1", LeadSaved(fields={"email": "a@x.io"})),
    (job_stream(1), started()),
    (job_stream(2), requested(user="user_2", job_type="report")),
    (job_stream(1), completed({"score": 90})),
]


async def filled_store(events: list[tuple[str, AnyEvent]] = EVENTS) -> MemoryStore:
    store = make_store()
    await append_all(store, events)
    return store


async def test_catch_up_applies_everything_up_to_the_head() -> None:
    store = await filled_store()
    model = ReadModel()
    runner = ProjectionRunner(store, model.projections)
    assert runner.position == 0
    assert await runner.catch_up() == 7 == runner.position
    assert model == rebuild(await store.read_all(1, 100))
    view = model.jobs.get(job_id(1))
    assert view is not None and view.status == "completed"
    assert model.usage.usage("site_a", "2026-11").remaining == 4
    assert await runner.catch_up() == 7


async def test_small_pages_give_the_same_model() -> None:
    store = await filled_store()
    model = ReadModel()
    await ProjectionRunner(store, model.projections, page_size=2).catch_up()
    assert model == rebuild(await store.read_all(1, 100))


async def test_a_running_runner_follows_and_wait_for_returns_once_applied() -> None:
    store = make_store()
    model = ReadModel()
    runner = ProjectionRunner(store, model.projections)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        for stream, event in EVENTS:
            (recorded,) = await store.append(stream, [event], ANY)
            with anyio.fail_after(5):
                await runner.wait_for(recorded.position)
            assert runner.position >= recorded.position
        view = model.jobs.get(job_id(1))
        assert view is not None and view.status == "completed"
        tg.cancel_scope.cancel()
    assert model == rebuild(await store.read_all(1, 100))


async def test_wait_for_catches_up_by_itself_without_a_follower() -> None:
    store = await filled_store(EVENTS[:3])
    model = ReadModel()
    runner = ProjectionRunner(store, model.projections)
    with anyio.fail_after(5):
        await runner.wait_for(2)
    assert runner.position == 3
    async with anyio.create_task_group() as tg:
        tg.start_soon(append_all, store, EVENTS[3:])
        with anyio.fail_after(5):
            await runner.wait_for(7)
    assert runner.position == 7


async def test_waiters_go_on_when_the_follower_stops() -> None:
    store = await filled_store(EVENTS[:2])
    runner = ProjectionRunner(store, ReadModel().projections)
    async with anyio.create_task_group() as outer:
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)

            async def wait() -> None:
                with anyio.fail_after(5):
                    await runner.wait_for(4)

            outer.start_soon(wait)
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        await append_all(store, EVENTS[2:4])
    assert runner.position == 4


async def test_a_checkpoint_resumes_where_it_was_saved(tmp_path: Path) -> None:
    path = tmp_path / "projections.ckpt"
    store = await filled_store(EVENTS[:4])
    first = ReadModel()
    runner = ProjectionRunner(store, first.projections, path)
    assert not await runner.load_checkpoint()  # no file yet
    await runner.catch_up()
    await runner.save_checkpoint()
    assert sorted(os.listdir(tmp_path)) == ["projections.ckpt"]
    await append_all(store, EVENTS[4:])

    second = ReadModel()
    resumed = ProjectionRunner(store, second.projections, path)
    assert await resumed.load_checkpoint()
    assert resumed.position == 4 and second == first
    await resumed.catch_up()
    assert second == rebuild(await store.read_all(1, 100))
    with pytest.raises(RuntimeError):
        await resumed.load_checkpoint()


async def test_run_saves_checkpoints_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    store = make_store()
    runner = ProjectionRunner(store, ReadModel().projections, path)
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: runner.run(checkpoint_every=0, task_status=task_status))
        await append_all(store, EVENTS)
        await append_all(store, [(job_stream(3), requested())])
        with anyio.fail_after(5):
            await runner.wait_for(8)  # the save after the 7th came before the 8th was applied
        tg.cancel_scope.cancel()
    model = ReadModel()
    resumed = ProjectionRunner(store, model.projections, path)
    assert await resumed.load_checkpoint() and resumed.position >= 7


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "not a checkpoint": lambda data: b"\xc1garbage" + data,
    "torn": lambda data: data[: len(data) // 2],
    "one byte short": lambda data: data[:-1],
    "trailing bytes": lambda data: data + b"\0",
    "flipped bit": flip_last_byte,
    "bad header": lambda data: data[:8] + b"\xc1" + data[9:],
    "other format": lambda data: b"".join(
        pack_checkpoint(7, "x", dict(unpack_checkpoint(data)[1]), fmt=99)
    ),
    "other projections": lambda data: b"".join(pack_checkpoint(7, "x", {"jobs": b"\x90"})),
    "unreadable state": lambda data: b"".join(
        pack_checkpoint(
            unpack_checkpoint(data)[0].position,
            unpack_checkpoint(data)[0].event_id,
            {**unpack_checkpoint(data)[1], "leads": msgspec.msgpack.encode({"leads": 1})},
        )
    ),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
async def test_an_unusable_checkpoint_is_ignored(
    tmp_path: Path, damage: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ckpt"
    store = await filled_store()
    saver = ProjectionRunner(store, ReadModel().projections, path)
    await saver.catch_up()
    await saver.save_checkpoint()
    path.write_bytes(damage(path.read_bytes()))
    model = ReadModel()
    runner = ProjectionRunner(store, model.projections, path)
    with caplog.at_level(logging.WARNING):
        assert not await runner.load_checkpoint()
    assert "ignoring checkpoint" in caplog.text
    assert runner.position == 0 and model == ReadModel()  # as fresh as before
    await runner.catch_up()
    assert model == rebuild(await store.read_all(1, 100))


async def test_a_checkpoint_of_another_store_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    runner = ProjectionRunner(await filled_store(), ReadModel().projections, path)
    await runner.catch_up()
    await runner.save_checkpoint()
    other = await filled_store()  # same events, other event ids
    assert not await ProjectionRunner(other, ReadModel().projections, path).load_checkpoint()
    shorter = await filled_store(EVENTS[:3])
    assert not await ProjectionRunner(shorter, ReadModel().projections, path).load_checkpoint()
    only_jobs = ProjectionRunner(await filled_store(), [JobTable()], path)
    assert not await only_jobs.load_checkpoint()  # another set of projections


async def test_runner_arguments_are_checked() -> None:
    store = make_store()
    with pytest.raises(ValueError, match="unique"):
        ProjectionRunner(store, [JobTable(), JobTable()])
    with pytest.raises(ValueError, match="checkpoint path"):
        await ProjectionRunner(store, [JobTable()]).save_checkpoint()
    assert not await ProjectionRunner(store, [JobTable()]).load_checkpoint()


async def test_fold_as_of_stops_at_the_position() -> None:
    store = await filled_store()
    events = await store.read_all(1, 100)
    for position in range(0, 9):
        model = ReadModel()
        applied = await fold_as_of(store, model.projections, position, page_size=2)
        assert applied == min(position, 7)
        assert model == rebuild(events[:position])


def test_write_atomically_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state"
    write_atomically(path, [b"one"])
    write_atomically(path, [b"tw", b"o"])
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["state"]
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "missing" / "state", [b"x"])


def test_a_checkpoint_packs_and_unpacks_in_place() -> None:
    data = b"".join(pack_checkpoint(12, "e12", {"a": b"\x01\x02", "b": b""}))
    header, states = unpack_checkpoint(data)
    assert (header.format, header.position, header.event_id) == (1, 12, "e12")
    assert {name: bytes(state) for name, state in states.items()} == {"a": b"\x01\x02", "b": b""}
    with pytest.raises(CheckpointUnreadable, match="checksum"):
        unpack_checkpoint(data[:-2] + b"\x09\x02")
