"""`verify_logs` reads the stream logs as `verify` did: same names accepted, same sums."""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec
import pytest

from eventstore.errors import InvalidId
from eventstore.filelog import FileLog
from eventstore.layout import SHARDS, Layout
from eventstore.verify import verify
from eventstore.verify_logs import (
    BAD_NAME,
    LogSeen,
    LogsSeen,
    Shards,
    _stream_of,
    joined,
    logs_seen,
)
from tests.eventstore.test_prune import SMALL_SEGMENT, build, prune_batch

UUID = "01a24f2b-8d33-7f35-8c48-3f2132ed0e3f"


def _reference(layout: Layout, name: str, shard: str) -> str:
    """What `verify` did before: the name as a stream, then `Layout.stream_file` of it."""
    path = f"{layout.streams}/{shard}/{name}"
    stream = ":".join(name[: -len(".log")].split("."))
    if layout.stream_file(stream) != path:
        raise InvalidId(f"stream log in the wrong place: {path}")
    return stream


def _shard(name: str) -> str:
    stream = ":".join(name[:-4].split("."))
    return f"{zlib.crc32(stream.encode()) % SHARDS:02x}"


@pytest.mark.parametrize(
    "name",
    [
        f"job.{UUID}.log",
        f"job.{UUID.upper()}.log",
        f"job.{UUID[:-1]}.log",
        f"job.{UUID}x.log",
        f"job:{UUID}.log",
        f"job.{UUID}.extra.log",
        "job.not-a-uuid.log",
        "usage.site-1.2026-11.log",
        "usage.site-1.2026-13.log",
        "lead.site-1.lead_7.log",
        "site.site-1.log",
        "pruned.site-1.log",
        "idem.site-1.user-1.abc.log",
        "other.site-1.log",
        "site.a:b.log",
    ],
)
@pytest.mark.parametrize("right_shard", [True, False])
def test_a_log_name_is_judged_as_stream_file_judges_it(
    tmp_path: Path, name: str, right_shard: bool
) -> None:
    layout = Layout(tmp_path)
    shard = _shard(name) if right_shard else f"{(int(_shard(name), 16) + 1) % SHARDS:02x}"
    base = f"{layout.streams}/{shard}"
    try:
        want: str | Exception = _reference(layout, name, shard)
    except InvalidId as exc:
        want = exc
    try:
        got: str | Exception = _stream_of(name, shard, base)
    except InvalidId as exc:
        got = exc
    if isinstance(want, Exception):
        assert isinstance(got, InvalidId) and str(got) == str(want)
    else:
        assert got == want


def test_a_log_read_early_and_pruned_since_is_not_reported_pending(tmp_path: Path) -> None:
    """The second process may read the logs before the feed walk; a prune that removes one
    in between leaves nothing pending (only a log still there after its tombstone is)."""
    data = tmp_path / "data"
    jobs = build(data, 20)
    seen = logs_seen(Layout(data))
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    log.prune(prune_batch(jobs[:1]))
    log.close()
    assert verify(data).findings == []
    assert verify(data, logs=lambda: seen).findings == []


def test_one_log_name_misplaced_in_two_shards_is_reported_twice_with_each_path(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    build(data, 3)
    layout = Layout(data)
    log = next(p for p in layout.stream_files() if p.name.startswith("job."))
    others = [d for d in sorted(layout.streams.iterdir()) if d != log.parent][:2]
    for shard in others:
        (shard / log.name).write_bytes(log.read_bytes())
    early = logs_seen(layout)
    for given in (None, early):  # read by the main process; as the second process gives them
        report = verify(data, logs=None if given is None else lambda: early)
        bad = [f for f in report.findings if f.kind == "bad_file"]
        assert sorted(f.where for f in bad) == [log.name, log.name]
        assert sorted(f.detail for f in bad) == sorted(
            f"stream log in the wrong place: {shard}/{log.name}" for shard in others
        )


def _odd_store(data: Path) -> Layout:
    """A store whose listing mixes clean logs with a misplaced, a torn and a damaged one."""
    jobs = build(data, 40)
    layout = Layout(data)
    paths = [layout.stream_path(s) for s in jobs]
    with paths[3].open("ab") as f:
        f.write(b"\x54\x4a\x01")  # a torn tail
    raw = bytearray(paths[7].read_bytes())
    raw[30] ^= 0xFF  # a flipped bit
    paths[7].write_bytes(bytes(raw))
    other = next(d for d in sorted(layout.streams.iterdir()) if d != paths[11].parent)
    (other / paths[11].name).write_bytes(paths[11].read_bytes())  # in the wrong shard
    return layout


@pytest.mark.parametrize("from_below", [0, 1, 97, SHARDS - 1, SHARDS])
def test_logs_read_in_two_parts_are_the_logs_read_in_one(tmp_path: Path, from_below: int) -> None:
    """Shards [0, k) read by the second process, [k, 256) by the main one, joined."""
    layout = _odd_store(tmp_path / "data")
    whole = logs_seen(layout)
    assert whole.others and whole.bad and whole.clean, "the store has every kind of log"
    shards = Shards(layout)
    below = joined([(i, shards.read(i)) for i in range(from_below)])  # the second process's
    above = joined([(i, shards.read(i)) for i in range(from_below, SHARDS)])  # the main one's
    below.extend(msgspec.msgpack.decode(msgspec.msgpack.encode(above), type=LogsSeen))
    assert below == whole
    assert list(below.logs()) == list(whole.logs())


def test_the_logs_come_in_the_listing_order(tmp_path: Path) -> None:
    layout = _odd_store(tmp_path / "data")
    seen = list(logs_seen(layout).logs())
    assert [_path_of(layout, log) for log in seen] == layout.stream_files()
    assert sum(log.size == BAD_NAME for log in seen) == 1
    assert sum(log.last < 0 for log in seen) == 3  # misplaced, torn, damaged: walked by verify


def _path_of(layout: Layout, log: LogSeen) -> Path:
    if log.size == BAD_NAME:  # its stream is "<shard>/<file name>"
        return layout.streams / log.stream
    return layout.stream_path(log.stream)
