"""`ShardClaims`: two takers, one from each end, share out every shard exactly once."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from eventstore.shard_claims import ClaimsStuck, ShardClaims, ShardsChanged


def _names(n: int) -> list[str]:
    return [f"{i:04x}" for i in range(n)]


def test_takers_from_both_ends_meet_and_share_every_shard_once(tmp_path: Path) -> None:
    path = str(tmp_path / "claims")
    below, above = ShardClaims(path, _names(7)), ShardClaims(path)
    assert above.shards == 7
    taken = [below.take(), above.take(from_top=True), below.take(), above.take(from_top=True)]
    assert taken == [0, 6, 1, 5]
    assert [below.take(), below.take(), below.take()] == [2, 3, 4]
    assert below.take() is None and above.take(from_top=True) is None
    assert below.taken_from_below() == 5
    below.close()
    above.close()


def test_claims_are_created_once(tmp_path: Path) -> None:
    path = str(tmp_path / "claims")
    ShardClaims(path, _names(3)).close()
    with pytest.raises(FileExistsError):
        ShardClaims(path, _names(3))


def test_racing_takers_never_take_a_shard_twice(tmp_path: Path) -> None:
    path = str(tmp_path / "claims")
    shards = 20_000
    ShardClaims(path, _names(shards)).close()
    got: dict[bool, list[int]] = {False: [], True: []}

    def take_all(from_top: bool) -> None:
        claims = ShardClaims(path)  # a descriptor of its own, as another process has
        try:
            while (index := claims.take(from_top=from_top)) is not None:
                got[from_top].append(index)
        finally:
            claims.close()

    threads = [threading.Thread(target=take_all, args=(top,)) for top in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    low, high = got[False], got[True]
    assert sorted(low + high) == list(range(shards))
    assert low == sorted(low) and high == sorted(high, reverse=True)
    assert not low or not high or max(low) < min(high)


def test_a_lock_not_let_go_is_reported_after_the_time_given(tmp_path: Path) -> None:
    path = str(tmp_path / "claims")
    claims = ShardClaims(path, _names(4))
    holder = os.open(path, os.O_RDWR)  # as a process stopped inside `take` holds it
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(ClaimsStuck):
            claims.take(from_top=True, within=0.05)
        with pytest.raises(ClaimsStuck):
            claims.taken_from_below(within=0.05)
        assert time.monotonic() - started < 5
    finally:
        os.close(holder)  # the holder ends: its lock goes with it
    assert claims.take(from_top=True, within=0.05) == 3
    claims.close()


def test_claims_are_for_the_shards_they_were_made_for(tmp_path: Path) -> None:
    claims = ShardClaims(str(tmp_path / "claims"), ["00", "01", "02"])
    claims.check(["00", "01", "02"])
    for other in (["00", "01"], ["00", "01", "03"], ["00", "02", "01"]):
        with pytest.raises(ShardsChanged):
            claims.check(other)
    claims.close()
