"""The commit process (`eventstore.commit_process`): killed, orphaned, failing, closed.

The contract suite runs over it too (the `file-process` store); these tests are about
the second process itself, killed with SIGKILL as a real one would be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import NoReturn

import anyio
import pytest

from eventstore import NO_STREAM, AppendTo, new
from eventstore import commit_process as cp
from eventstore.errors import (
    CorruptionError,
    InvalidId,
    OutcomeUnknown,
    StorageError,
    StoreClosed,
    WrongExpectedVersion,
)
from eventstore.filelog import EventTooLarge, FileLog
from eventstore.filestore import open_file_store
from eventstore.planning import DuplicateEventIds
from eventstore.records import RecordedEvent
from eventstore.retention import InvalidPrune
from eventstore.verify import verify
from tests.eventstore.commit_children import (
    READY,
    commit_children,
    scripted_children,
    started_child,
    wait_until,
)
from tests.eventstore.helpers import job_stream, requested, spawn, wait_for_line


@pytest.mark.anyio
async def test_a_killed_commit_process_loses_no_append(tmp_path: Path) -> None:
    """What the killed child held goes to the next one: each append is answered once,
    whether the dead child had made it or not, and lands once."""
    data = tmp_path / "data"
    acked: list[RecordedEvent] = []
    async with open_file_store(data, commit_process=True) as store:
        first = await started_child(store, data)
        stop = anyio.Event()

        async def appender() -> None:
            while not stop.is_set():
                done = await store.append_many(
                    [AppendTo(job_stream(), [new(requested())], NO_STREAM)]
                )
                acked.append(done[0][0])

        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(appender)
            for _ in range(3):
                await wait_until(lambda: len(acked) >= 200)
                [child] = commit_children(data, os.getpid())
                os.kill(child, signal.SIGKILL)
                at_kill = len(acked)
                await wait_until(lambda: len(acked) >= at_kill + 200)  # noqa: B023
            stop.set()
        [last] = commit_children(data, os.getpid())
        assert last != first, "new commit processes took the appends after the kills"
    assert commit_children(data) == [], "closing the store ends its commit process"
    log = FileLog(data, readonly=True)
    feed = [e for page in log.iter_all() for e in page]
    log.close()
    by_id = {e.id: e for e in feed}
    assert len(by_id) == len(feed), "no append landed twice"
    assert all(by_id[e.id] == e for e in acked), "each answer is what was recorded"
    assert len(feed) == len(acked) + 1
    assert [e.position for e in feed] == list(range(1, len(feed) + 1))
    assert verify(data).ok


def _take_one_and_exit(status: int) -> str:
    """A scripted child: ready, takes one message, exits with `status`."""
    return READY + f"s.recv(1 << 16)\nos._exit({status})\n"


@pytest.mark.anyio
async def test_an_append_whose_two_children_died_fails_as_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = scripted_children(monkeypatch, [_take_one_and_exit(9)] * 2)
    async with open_file_store(tmp_path / "data", commit_process=True) as store:
        with pytest.raises(OutcomeUnknown):
            await store.append(job_stream(), [requested()], NO_STREAM)
        assert len(pids) == 2, "sent once more to a second child, no more"


def test_the_commit_process_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    parent = spawn("commit-process-parent", data)
    try:
        child = int(wait_for_line(parent, "CHILD").split()[1])
        parent.send_signal(signal.SIGKILL)
        parent.communicate(timeout=30)
        deadline = time.monotonic() + 30
        while child in commit_children(data) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child not in commit_children(data), "an orphaned commit process exits"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
    assert verify(data).ok


@pytest.mark.anyio
async def test_a_commit_process_that_fails_an_fsync_stops_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit status 70 (filelog.die after a failed fdatasync) stops this process too, and
    nothing is sent again: no process may append after the kernel may have dropped
    written pages."""
    pids = scripted_children(monkeypatch, [_take_one_and_exit(70)])
    stopped: list[BaseException] = []

    def on_fatal(reason: BaseException) -> NoReturn:
        stopped.append(reason)
        raise asyncio.CancelledError  # ends the restarting task, as die() ends the process

    async with open_file_store(tmp_path / "data", commit_process=True, on_fatal=on_fatal) as s:
        with pytest.raises(StorageError, match="fsync"):
            await s.append(job_stream(), [requested()], NO_STREAM)
        assert len(stopped) == 1
        assert len(pids) == 1, "no second child after a failed fsync"


@pytest.mark.anyio
async def test_a_closed_store_refuses_appends_and_leaves_no_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_file_store(data, commit_process=True) as store:
        assert commit_children(data) == [], "the child starts with the first append"
        await store.append(job_stream(), [requested()], NO_STREAM)
        assert len(commit_children(data, os.getpid())) == 1
    assert commit_children(data) == []
    with pytest.raises(StoreClosed):
        await store.append(job_stream(), [requested()], NO_STREAM)


@pytest.mark.parametrize(
    "error",
    [
        WrongExpectedVersion("job:x", 3, 5),
        InvalidId("bad id"),
        StorageError("disk full"),
        CorruptionError("damage"),
        StoreClosed("closed"),
        EventTooLarge("too large"),
        InvalidPrune("bad prune"),
        DuplicateEventIds("twice"),
    ],
)
def test_errors_cross_as_the_class_the_store_raised(error: Exception) -> None:
    back = cp.error_from_wire(cp.error_to_wire(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    if isinstance(error, WrongExpectedVersion):
        assert isinstance(back, WrongExpectedVersion)
        assert (back.stream, back.expected, back.actual) == ("job:x", 3, 5)


def test_an_unknown_or_malformed_error_crosses_as_a_storage_error() -> None:
    assert type(cp.error_from_wire(("KeyError", ["x"]))) is StorageError
    assert type(cp.error_from_wire(("WrongExpectedVersion", ["x"]))) is StorageError


def test_frames_come_out_whole_however_the_bytes_are_cut() -> None:
    import msgspec

    frames = cp.Frames(msgspec.msgpack.Decoder(list[int]))
    data = b"".join(cp.frame(msgspec.msgpack.encode([n, n + 1])) for n in range(50))
    out = []
    for at in range(0, len(data), 7):
        out += frames.feed(data[at : at + 7])
    assert out == [[n, n + 1] for n in range(50)]
