"""The commit process's failures: children that die mid-answer, hang, fail to start or
fail an fsync, and a store closed while appends are in hand. Real processes throughout."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import NoReturn

import anyio
import pytest

from eventstore import NO_STREAM, EventStore
from eventstore import commit_process as cp
from eventstore.errors import OutcomeUnknown, StorageError
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.records import RecordedEvent
from tests.eventstore.commit_children import (
    NO_FORK,
    READY,
    commit_children,
    scripted_children,
    started_child,
    wait_until,
)
from tests.eventstore.helpers import job_stream, requested


def _feed(data: Path) -> list[RecordedEvent]:
    log = FileLog(data, readonly=True)
    try:
        return [e for page in log.iter_all() for e in page]
    finally:
        log.close()


@pytest.mark.anyio
async def test_a_child_killed_mid_answer_does_not_garble_the_next_childs_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that dies part way through writing an answer (SIGKILL, out of memory
    during a large answer) leaves half a frame in the parent's buffer; the next child's
    messages must not be read as its continuation."""
    half_answer = READY + (
        "s.recv(1 << 16)\n"
        "s.sendall(struct.pack('<I', 1000) + b'\\x93' * 10)\n"  # 10 of 1000 bytes
        "os._exit(9)\n"
    )
    pids = scripted_children(monkeypatch, [half_answer])
    data = tmp_path / "data"
    async with open_file_store(data, commit_process=True) as store:
        with anyio.fail_after(30):
            await store.append(job_stream(), [requested()], NO_STREAM)
            await store.append(job_stream(), [requested()], NO_STREAM)
        assert len(pids) == 2
    assert len(_feed(data)) == 2


@pytest.mark.anyio
async def test_an_append_lost_when_the_next_child_fails_to_start_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first child took the append and died: it may have made it. If the next child
    dies before it is ready, the append must not fail as a plain StorageError (which
    the service answers as 'nothing was written')."""
    take_and_die = READY + "s.recv(1 << 16)\nos._exit(9)\n"
    die_at_start = "import os\nos._exit(9)\n"
    scripted_children(monkeypatch, [take_and_die, die_at_start])
    async with open_file_store(tmp_path / "data", commit_process=True) as store:
        with anyio.fail_after(30), pytest.raises(StorageError) as caught:
            await store.append(job_stream(), [requested()], NO_STREAM)
        assert isinstance(caught.value, OutcomeUnknown), repr(caught.value)
        with anyio.fail_after(30):  # the store still works with the next child
            await store.append(job_stream(), [requested()], NO_STREAM)


@pytest.mark.anyio
async def test_closing_beside_a_stopped_child_answers_every_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that hangs (SIGSTOP) with appends in hand: closing the store gives up on
    it after STOP_SECONDS, and every appender is answered, none waits forever."""
    monkeypatch.setattr(cp, "STOP_SECONDS", 1.0)
    data = tmp_path / "data"
    errors: list[BaseException] = []
    async with open_file_store(data, commit_process=True) as store:
        child = await started_child(store, data)
        os.kill(child, signal.SIGSTOP)
        try:

            async def appender() -> None:
                try:
                    await store.append(job_stream(), [requested()], NO_STREAM)
                except StorageError as exc:
                    errors.append(exc)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(4):
                        tg.start_soon(appender)
                    await anyio.sleep(0.2)
                    await store.aclose()
        finally:
            if commit_children(data, os.getpid()):
                os.kill(child, signal.SIGKILL)
                os.kill(child, signal.SIGCONT)
    assert len(errors) == 4
    assert all(isinstance(e, OutcomeUnknown) for e in errors), errors
    assert commit_children(data) == []


@pytest.mark.anyio
async def test_closing_while_a_killed_child_is_replaced_leaves_no_process(
    tmp_path: Path,
) -> None:
    """The store closes while a new child is starting for a killed one's appends: the
    appends it held are answered as of unknown outcome, and no child is left behind."""
    for delay in (0.0, 0.001, 0.01, 0.05, 0.1, 0.2):
        await _close_while_replacing(tmp_path / f"data-{delay}", delay)


async def _close_while_replacing(data: Path, delay: float) -> None:
    errors: list[BaseException] = []
    answered: list[bool] = []
    async with open_file_store(data, commit_process=True) as store:
        child = await started_child(store, data)

        async def appender() -> None:
            try:
                await store.append(job_stream(), [requested()], NO_STREAM)
                answered.append(True)
            except StorageError as exc:
                errors.append(exc)

        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                os.kill(child, signal.SIGSTOP)  # the appends reach it and stay in its hand
                for _ in range(8):
                    tg.start_soon(appender)
                await anyio.sleep(0.05)
                os.kill(child, signal.SIGKILL)
                await wait_until(lambda: commit_children(data, os.getpid()) != [child])
                await anyio.sleep(delay)
                await store.aclose()
    await wait_until(lambda: commit_children(data) == [], within=5)
    assert len(errors) + len(answered) == 8, delay
    assert all(isinstance(e, OutcomeUnknown) for e in errors), (delay, errors)


@pytest.mark.anyio
async def test_a_child_that_cannot_be_spawned_fails_the_lost_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork or exec failing (out of memory, of processes) when a dead child is replaced:
    the appends it held are answered, not left waiting on a task that died of OSError."""
    take_and_die = READY + "s.recv(1 << 16)\nos._exit(9)\n"
    scripted_children(monkeypatch, [take_and_die, NO_FORK])
    async with open_file_store(tmp_path / "data", commit_process=True) as store:
        with anyio.fail_after(20), pytest.raises(OutcomeUnknown):
            await store.append(job_stream(), [requested()], NO_STREAM)
        with anyio.fail_after(20):
            await store.append(job_stream(), [requested()], NO_STREAM)


@pytest.mark.anyio
async def test_an_append_starting_a_child_as_the_store_closes_does_not_outlive_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append that finds its child dead starts another; the store closing meanwhile
    must not be followed by a new child committing appends after aclose() returned."""
    real_reap = cp._reap

    def slow_reap(proc: subprocess.Popen[bytes]) -> int:
        time.sleep(0.5)
        return real_reap(proc)

    monkeypatch.setattr(cp, "_reap", slow_reap)
    data = tmp_path / "data"
    out: list[object] = []
    async with open_file_store(data, commit_process=True) as store:
        child = await started_child(store, data)
        os.kill(child, signal.SIGKILL)
        await wait_until(lambda: commit_children(data, os.getpid()) == [])

        async def appender() -> None:
            try:
                out.append(await store.append(job_stream(), [requested()], NO_STREAM))
            except StorageError as exc:
                out.append(exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(appender)
                await anyio.sleep(0.2)  # the appender is reaping the dead child
                await store.aclose()
                assert store._committer._transport is None  # type: ignore[attr-defined]
            assert commit_children(data, os.getpid()) == [], "a child started after close"
        assert len(out) == 1 and isinstance(out[0], StorageError), out


@pytest.mark.anyio
async def test_a_failed_fsync_stops_the_parent_even_with_nothing_to_send_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second child fails its fsync (status 70) holding only an append it was sent
    again (which fails as unknown): nothing is left to send, yet the parent must stop
    now, not at some later append."""
    take_and_die = READY + "s.recv(1 << 16)\nos._exit(9)\n"
    take_and_fail_fsync = READY + "s.recv(1 << 16)\nos._exit(70)\n"
    scripted_children(monkeypatch, [take_and_die, take_and_fail_fsync])
    stopped: list[BaseException] = []

    def on_fatal(reason: BaseException) -> NoReturn:
        stopped.append(reason)
        raise asyncio.CancelledError  # ends the task that saw it, as die() ends the process

    async with open_file_store(tmp_path / "data", commit_process=True, on_fatal=on_fatal) as s:
        with anyio.fail_after(20), pytest.raises(OutcomeUnknown):
            await s.append(job_stream(), [requested()], NO_STREAM)
        await wait_until(lambda: bool(stopped), within=10)


def _zombies() -> list[int]:
    found = []
    for entry in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split():
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            found.append(int(entry))
    return found


@pytest.mark.anyio
async def test_a_child_dying_idle_is_reaped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_file_store(data, commit_process=True) as store:
        child = await started_child(store, data)
        os.kill(child, signal.SIGKILL)
        await wait_until(lambda: child not in _zombies() and not Path(f"/proc/{child}").exists())


@pytest.mark.anyio
async def test_an_append_cancelled_while_its_child_starts_leaves_no_lost_error(
    tmp_path: Path,
) -> None:
    """The first append starts the child; cancelled at any step of that start (a client
    gone, the store closing), the start's failure must not be left for asyncio to report
    as never retrieved (which anyio's test runner turns into this test's failure)."""
    for steps in range(12):
        async with open_file_store(tmp_path / f"data-{steps}", commit_process=True) as store:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_append_ignoring_storage_errors, store)
                for _ in range(steps):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
        gc.collect()  # a future dropped with its exception unread is reported now
        await anyio.sleep(0.01)


async def _append_ignoring_storage_errors(store: EventStore) -> None:
    with contextlib.suppress(StorageError):
        await store.append(job_stream(), [requested()], NO_STREAM)
