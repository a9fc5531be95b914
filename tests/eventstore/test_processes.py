"""Several OS processes on one data directory: racing writers and a follower."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from eventstore import NO_STREAM, AppendTo, new
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.verify import verify
from tests.eventstore.helpers import job_stream, progressed, requested, spawn, wait_for_line


def test_racing_processes_on_one_stream_win_each_version_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = FileLog(data)
    s = job_stream()
    log.append_many([AppendTo(s, [new(requested())], NO_STREAM)])
    procs = [spawn("race-one", data, s, 40) for _ in range(4)]
    won: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        won.extend(int(line.split()[1]) for line in out.splitlines() if line.startswith("WON"))
    assert sorted(won) == list(range(2, 2 + 160)), "each version won by exactly one writer"
    events = log.read_stream(s)
    assert [e.version for e in events] == list(range(1, 162))
    assert len({e.id for e in events}) == 161
    assert verify(data).ok
    log.close()


def test_processes_creating_many_streams_get_dense_unique_positions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    procs = [spawn("many", data, 200, 4) for _ in range(3)]
    positions: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        for line in out.splitlines():
            positions.extend(int(x) for x in line.split()[1:])
    assert sorted(positions) == list(range(1, 1 + 3 * 200 * 2))
    log = FileLog(data, readonly=True)
    feed = [e for page in log.iter_all() for e in page]
    assert [e.position for e in feed] == list(range(1, len(positions) + 1))
    assert verify(data).ok


@pytest.mark.anyio
async def test_follower_in_another_process_sees_every_event_once_in_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_file_store(data) as store:
        s = job_stream()
        await store.append(s, [requested()], NO_STREAM)
        child = spawn("follow", data, 1, 61)
        wait_for_line(child, "READY")
        for i in range(60):
            await store.append(s, [progressed(i)], i + 1)
            if i % 7 == 0:
                await anyio.sleep(0.02)
        t0 = time.monotonic()
        out, err = await anyio.to_thread.run_sync(lambda: child.communicate(timeout=30))
        assert child.returncode == 0, err
        seen = [int(line.split()[1]) for line in out.splitlines() if line.startswith("SAW")]
        assert seen == list(range(1, 62))
        assert time.monotonic() - t0 < 30


def test_a_restarted_follower_sees_every_event_once_while_appenders_are_killed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    seen: list[int] = []
    follower = spawn("follow", data, 1, 1 << 40)
    wait_for_line(follower, "READY")
    for round_ in range(6):
        appender = spawn("crash", data, round_, 2)
        wait_for_line(appender, "READY")
        time.sleep(0.05 + 0.02 * round_)
        appender.send_signal(signal.SIGKILL)
        appender.communicate(timeout=30)
        if round_ % 2 == 1:  # drop the follower, resume after the last position it printed
            follower.send_signal(signal.SIGKILL)
            out, _ = follower.communicate(timeout=30)
            seen.extend(int(x.split()[1]) for x in out.splitlines() if x.startswith("SAW"))
            follower = spawn("follow", data, (seen[-1] if seen else 0) + 1, 1 << 40)
            wait_for_line(follower, "READY")
    log = FileLog(data)  # recovery of the last kill
    head = log.head()
    log.close()
    time.sleep(1.0)  # one rescan period and more: the follower must have caught up
    follower.send_signal(signal.SIGKILL)
    out, _ = follower.communicate(timeout=30)
    seen.extend(int(x.split()[1]) for x in out.splitlines() if x.startswith("SAW"))
    assert head > 0
    assert seen == list(range(1, head + 1)), "every event once, in order, across restarts"
