"""Smaller guarantees of retention in the store: tombstones only through `prune`, the
tombstones durable before a log goes, a damaged segment that does not block later prunes,
and a retention round that never stops the process that runs it."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from eventstore import ANY, NO_STREAM, AppendTo, EventStore, new, streams
from eventstore.errors import CorruptionError
from eventstore.filelog import FileLog
from eventstore.layout import Layout
from eventstore.retention import InvalidPrune
from service.operator import prune as prune_cmd
from tests.eventstore.helpers import job_stream, requested
from tests.eventstore.test_prune import SMALL_SEGMENT, build, prune_batch, tombstone


@pytest.mark.anyio
async def test_a_tombstone_outside_prune_is_refused(store: EventStore) -> None:
    s = job_stream()
    with pytest.raises(InvalidPrune):
        await store.append(streams.pruned("s1"), [new(tombstone(s))], ANY)
    assert await store.read_all(1, 10) == []


def test_a_prune_appends_tombstones_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = build(data, 2)
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    try:
        batch = prune_batch(jobs[:1])
        batch.append(AppendTo(job_stream(), [new(requested())], NO_STREAM))  # no tombstone
        with pytest.raises(InvalidPrune):
            log.prune(batch)
        assert len(log.read_stream(jobs[0])) == 2
    finally:
        log.close()


def test_the_tombstones_are_durable_before_a_log_goes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = build(data, 4)
    victim = Layout(data).stream_path(jobs[0])
    seen: list[tuple[int, bool]] = []

    def fsync(fd: int) -> None:
        os.fdatasync(fd)
        seen.append((os.fstat(fd).st_size, victim.exists()))

    log = FileLog(data, segment_bytes=SMALL_SEGMENT, fsync=fsync)
    try:
        end = log._mark.end
        log.prune(prune_batch(jobs[:1]))
    finally:
        log.close()
    assert not victim.exists()
    # Some fsync after the tombstones' record was written ran while the log was still there.
    assert any(size > end and there for size, there in seen), seen


def test_a_damaged_segment_is_reported_and_does_not_block_later_prunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from eventstore import retention

    data = tmp_path / "data"
    jobs = build(data, 40)
    real = retention.rewrite_segment
    broken = {1}

    def rewrite(layout: Layout, first: int, nxt: int, drop: object) -> int:
        if first in broken:
            raise CorruptionError(f"segment {first} is damaged")
        return real(layout, first, nxt, drop)  # type: ignore[arg-type]

    monkeypatch.setattr(retention, "rewrite_segment", rewrite)
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    try:
        with caplog.at_level(logging.ERROR, logger="jobtrail.store"):
            log.prune(prune_batch([jobs[0], jobs[-1]]))
        assert "segment 1 is damaged" in caplog.text
        assert not log.layout.prune_todo.exists()  # no todo left to block the next one
        log.prune(prune_batch([jobs[-2]]))  # and the next prune works
        left = {e.stream for page in log.iter_all() for e in page}
        assert jobs[-1] not in left and jobs[-2] not in left
        assert jobs[0] in left  # its segment was left as it was
    finally:
        log.close()


def test_a_failing_retention_round_never_stops_the_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = 0

    async def boom(*args: object, **kwargs: object) -> object:
        nonlocal rounds
        rounds += 1
        raise RuntimeError("not a StorageError")

    monkeypatch.setattr(prune_cmd, "prune_finished", boom)

    async def run() -> None:
        with anyio.move_on_after(0.5):
            await prune_cmd.prune_periodically(None, timedelta(days=1), every=0.01)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="jobtrail.prune"):
        anyio.run(run)
    assert rounds >= 3
    assert "retention prune failed" in caplog.text
