"""`shared_logs`: whatever the second process hands on, or fails to, every log is read once.

The second process is played here by `write_parts` run in this process (or not run at
all, for one that died): `SharedRead` is the part under test. `tests/operator/test_verify.py`
runs the real second process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from eventstore import shared_logs
from eventstore.layout import SHARDS, Layout
from eventstore.shard_claims import ClaimsStuck, ShardClaims, ShardsChanged
from eventstore.shared_logs import PartsReader, ShardPart, SharedRead, write_part, write_parts
from eventstore.verify_logs import Shards, joined, logs_seen
from tests.eventstore.test_verify_logs import _odd_store


class StandIn:
    """A second process that has done (or not) whatever the test did for it."""

    def __init__(self) -> None:
        self.waited: list[float | None] = []
        self.stopped = 0

    def result(self, timeout: float | None = None) -> object | None:
        self.waited.append(timeout)
        return None

    def stop(self) -> None:
        self.stopped += 1


def _start(directory: Path) -> tuple[Layout, SharedRead]:
    """A store of every kind of log, and `SharedRead`'s files beside it."""
    layout = _odd_store(directory / "data")
    return layout, SharedRead(layout, str(directory))


def _read_all(layout: Layout, shared: SharedRead) -> StandIn:
    """Read with a stand-in second process: every log must be there, as one process reads
    them."""
    helper = StandIn()
    try:
        assert shared.read(helper) == logs_seen(layout)
    finally:
        shared.close()
    return helper


def _append(directory: Path, data: bytes) -> None:
    with (directory / "parts").open("ab") as f:
        f.write(data)


def _hand_on(layout: Layout, directory: Path, shards: int) -> None:
    """As the second process: take `shards` shards from below and hand on their logs."""
    claims = ShardClaims(str(directory / "claims"))
    fd = os.open(directory / "parts", os.O_WRONLY | os.O_APPEND)
    try:
        for _ in range(shards):
            index = claims.take()
            assert index is not None
            write_part(fd, ShardPart(index, Shards(layout).read(index)))
    finally:
        os.close(fd)
        claims.close()


@pytest.mark.parametrize("handed_on", [0, 1, 100, SHARDS])
def test_every_log_is_read_whoever_reads_it(tmp_path: Path, handed_on: int) -> None:
    layout, shared = _start(tmp_path)
    _hand_on(layout, tmp_path, handed_on)
    helper = _read_all(layout, shared)
    assert helper.waited == [] and helper.stopped == 0, "all was handed on: no wait"


@pytest.mark.parametrize("taken_not_handed_on", [1, 7])
def test_shards_a_dead_second_process_took_are_read_here(
    tmp_path: Path, taken_not_handed_on: int
) -> None:
    layout, shared = _start(tmp_path)
    _hand_on(layout, tmp_path, 3)
    claims = ShardClaims(str(tmp_path / "claims"))
    for _ in range(taken_not_handed_on):
        claims.take()  # it took them, then died
    helper = _read_all(layout, shared)
    assert helper.waited and helper.stopped, "it was waited for, then ended"


@pytest.mark.parametrize(
    "bad",
    [
        b"\x05\x00\x00\x00\xc1\xc1\xc1\xc1\xc1",  # a length, then bytes that are no part
        b"\x03\x00\x00\x00\x92\x07\xc0",  # a part of the wrong shape
    ],
)
def test_after_a_part_that_is_not_right_its_shards_are_read_here(
    tmp_path: Path, bad: bytes
) -> None:
    layout, shared = _start(tmp_path)
    _hand_on(layout, tmp_path, 2)
    ShardClaims(str(tmp_path / "claims")).take()
    _append(tmp_path, bad)
    helper = _read_all(layout, shared)
    assert helper.stopped and helper.waited == [], "ended at once, not waited for"


def test_a_part_out_of_order_is_not_trusted(tmp_path: Path) -> None:
    layout, shared = _start(tmp_path)
    claims = ShardClaims(str(tmp_path / "claims"))
    claims.take()
    claims.take()
    fd = os.open(tmp_path / "parts", os.O_WRONLY | os.O_APPEND)
    write_part(fd, ShardPart(1, Shards(layout).read(0)))  # shard 0's logs, said to be 1's
    os.close(fd)
    helper = _read_all(layout, shared)
    assert helper.stopped


def test_a_second_process_listing_other_shards_takes_none(tmp_path: Path) -> None:
    layout = _odd_store(tmp_path / "data")
    names = Shards(layout).names
    claims = ShardClaims(str(tmp_path / "claims"), [*names[:-1], "zz"])  # as many, not the same
    fd = os.open(tmp_path / "parts", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        with pytest.raises(ShardsChanged):
            write_parts(layout, claims, fd)
    finally:
        os.close(fd)
    assert claims.taken_from_below() == 0 and (tmp_path / "parts").read_bytes() == b""


def test_parts_are_taken_in_whole_as_the_second_process_writes_them(tmp_path: Path) -> None:
    layout = _odd_store(tmp_path / "data")
    claims = ShardClaims(str(tmp_path / "claims"), Shards(layout).names)
    path = tmp_path / "parts"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        assert write_parts(layout, claims, fd) == SHARDS
    finally:
        os.close(fd)
    written = path.read_bytes()
    half = len(written) // 2
    path.write_bytes(written[:half])  # as a reader finds it while the writer is at work
    reader = PartsReader(str(path))
    try:
        first = reader.new()
        assert 0 < len(first) < SHARDS and reader.new() == []
        with path.open("ab") as f:
            f.write(written[half:])
        rest = reader.new()
    finally:
        reader.close()
    parts = first + rest
    assert [p.index for p in parts] == list(range(SHARDS))
    assert joined([(p.index, p.logs) for p in parts]) == logs_seen(layout)


def test_a_second_process_that_holds_the_lock_is_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_logs, "CLAIM_SECONDS", 0.05)
    layout, shared = _start(tmp_path)
    _hand_on(layout, tmp_path, 2)
    holder = os.open(tmp_path / "claims", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # stopped inside `take`

    class Holding(StandIn):
        def stop(self) -> None:
            super().stop()
            if self.stopped == 1:
                os.close(holder)  # ended: its lock goes with it

    helper = Holding()
    try:
        assert shared.read(helper) == logs_seen(layout)
    finally:
        shared.close()
    assert helper.stopped >= 1


def test_a_lock_held_after_the_second_process_was_ended_is_an_error_not_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify` then checks the plain way (ClaimsStuck is an OSError)."""
    monkeypatch.setattr(shared_logs, "CLAIM_SECONDS", 0.05)
    layout, shared = _start(tmp_path)
    holder = os.open(tmp_path / "claims", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # held by something ending the process does not end
    helper = StandIn()
    try:
        with pytest.raises(ClaimsStuck):
            shared.read(helper)
    finally:
        os.close(holder)
        shared.close()
    assert helper.stopped == 1
    assert issubclass(ClaimsStuck, OSError)
