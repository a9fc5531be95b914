"""Injected faults: torn tails, flipped bits, a failing fsync, a full disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eventstore import (
    NO_STREAM,
    AppendTo,
    CorruptionError,
    StorageError,
    WrongExpectedVersion,
    framing,
    new,
)
from eventstore.events import JobRequested
from eventstore.filelog import EventTooLarge, FileLog
from eventstore.records import RecordedEvent
from eventstore.verify import verify
from tests.eventstore.helpers import job_stream, progressed, requested, spawn


def _store_with_events(data: Path, n: int = 5) -> tuple[str, list[RecordedEvent]]:
    log = FileLog(data)
    s = job_stream()
    out = log.append_many([AppendTo(s, [new(requested())], NO_STREAM)])[0]
    for v in range(1, n):
        out += log.append_many([AppendTo(s, [new(progressed(v))], v)])[0]
    log.close()
    return s, out


def test_a_record_torn_at_every_byte_reads_as_the_prefix_and_is_set_aside(
    tmp_path: Path,
) -> None:
    base = tmp_path / "base"
    s, events = _store_with_events(base, 4)
    whole = tmp_path / "whole"
    shutil.copytree(base, whole)
    log = FileLog(whole)
    log.append_many([AppendTo(s, [new(progressed(4))], 4)])
    log.close()
    start = (base / "feed" / "feed.log").stat().st_size
    record = (whole / "feed" / "feed.log").read_bytes()[start:]
    for cut in range(1, len(record)):
        # a writer killed mid-write: part of its feed record, nothing in the stream log
        data = tmp_path / f"cut{cut}"
        shutil.copytree(base, data)
        with (data / "feed" / "feed.log").open("ab") as f:
            f.write(record[:cut])
        reader = FileLog(data, readonly=True)
        assert [e.position for e in reader.read_all(1)] == [1, 2, 3, 4]
        assert reader.read_stream(s) == events
        reader.close()
        report = verify(data)
        assert report.ok, report.findings
        assert [f.kind for f in report.findings] == ["torn_tail"]
        writer = FileLog(data)  # recovery sets the tail aside, then appends go on
        more = writer.append_many([AppendTo(s, [new(progressed(5))], 4)])
        assert more[0][0].position == 5 and more[0][0].version == 5
        writer.close()
        after = verify(data)
        assert after.ok and [f.kind for f in after.findings] == ["set_aside"], after.findings
        assert [p.stat().st_size for p in (data / "quarantine").iterdir()] == [cut]


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def test_a_bit_flip_inside_a_stream_log_is_reported_and_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s, events = _store_with_events(data)
    path = FileLog(data, readonly=True).layout.stream_path(s)
    _flip(path, path.stat().st_size // 2)
    report = verify(data)
    assert not report.ok
    assert any(f.kind == "damage" and f.where == s for f in report.findings)
    reader = FileLog(data, readonly=True)
    got = reader.read_stream(s)
    assert got == events[: len(got)] and len(got) < len(events), "only the valid prefix"
    writer = FileLog(data)
    with pytest.raises(CorruptionError):
        writer.append_many([AppendTo(s, [new(progressed(9))], len(events))])
    assert path.stat().st_size > 0, "the damaged log is kept for an operator, not truncated"
    other = writer.append_many([AppendTo(job_stream(), [new(requested())], NO_STREAM)])
    assert other[0][0].position == len(events) + 1, "other streams carry on"
    writer.close()


def test_a_bit_flip_inside_the_feed_stops_writers_and_fails_verify(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _store_with_events(data)
    feed = data / "feed" / "feed.log"
    _flip(feed, feed.stat().st_size // 2)
    report = verify(data)
    assert not report.ok and any(f.kind == "damage" and f.where == "feed" for f in report.findings)
    (data / "feed" / "feed.mark").write_bytes(b"")  # forces a full recovery scan
    with pytest.raises(CorruptionError):
        FileLog(data)


def test_a_failing_fsync_stops_the_process_without_acknowledging(tmp_path: Path) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    child = spawn("fsync-fails", data, 4)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 70, err
    assert "fatal storage error" in err
    acked = [line.split() for line in out.splitlines() if line.startswith("ACK")]
    assert len(acked) == 3, "the append whose fsync failed was never acknowledged"
    log = FileLog(data)  # a restart recovers; acknowledged events are all there
    stream = acked[0][1]
    ids = [e.id for e in log.read_stream(stream)]
    assert ids[:3] == [a[2] for a in acked]
    log.close()
    assert verify(data).ok


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    child = spawn("disk-full", data, 64 * 1024)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    errors = [line for line in out.splitlines() if line.startswith("ERR")]
    acked = [line.split() for line in out.splitlines() if line.startswith("ACK")]
    assert len(errors) == 3 and "storage could not be written" in errors[0]
    assert acked, "appends below the limit worked"
    log = FileLog(data)
    events = log.read_stream(acked[0][1])
    assert [e.id for e in events] == [a[2] for a in acked], "exactly the acknowledged events"
    assert [e.position for e in log.read_all(1)] == list(range(1, len(acked) + 1))
    log.close()
    report = verify(data)
    assert report.ok and not report.findings, report.findings


def test_storage_error_is_a_storage_error() -> None:
    assert StorageError.code == "StorageUnavailable" and StorageError.status == 503


def test_a_cached_version_is_rechecked_after_another_writer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    a, b = FileLog(data), FileLog(data)
    s, t = job_stream(), job_stream()
    a.append_many([AppendTo(s, [new(requested())], NO_STREAM)])
    b.append_many([AppendTo(s, [new(progressed(1))], 1)])  # b moves s on
    a.append_many([AppendTo(t, [new(requested())], NO_STREAM)])  # a writes elsewhere
    with pytest.raises(WrongExpectedVersion):
        a.append_many([AppendTo(s, [new(progressed(1))], 1)])
    a.close()
    b.close()
    assert verify(data).ok


def test_a_torn_record_whose_payload_embeds_a_frame_is_still_a_torn_tail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = FileLog(data)
    s = job_stream()
    fake = framing.frame(99, 1, b"\x90")  # a valid frame hidden inside a client's string
    log.append_many([AppendTo(s, [new(requested())], NO_STREAM)])
    log.close()
    whole = tmp_path / "whole"
    shutil.copytree(data, whole)
    big = JobRequested(job_type="x", site_id="s1", user_id="u1", params={"p": fake.hex()})
    log = FileLog(whole)
    log.append_many([AppendTo(job_stream(), [new(big)], NO_STREAM)])
    log.close()
    start = (data / "feed" / "feed.log").stat().st_size
    record = (whole / "feed" / "feed.log").read_bytes()[start:]
    with (data / "feed" / "feed.log").open("ab") as f:
        f.write(record[:-3])
    assert verify(data).ok
    FileLog(data).close()  # recovery sets it aside instead of refusing to start
    assert verify(data).ok


def test_an_oversized_append_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "MAX_PAYLOAD", 4096)
    log = FileLog(tmp_path / "data")
    with pytest.raises(EventTooLarge):
        log.append_many([AppendTo(job_stream(), [new(requested(pad=5000))], NO_STREAM)])
    ok = log.append_many([AppendTo(job_stream(), [new(requested())], NO_STREAM)])
    assert ok[0][0].position == 1
    log.close()


def test_damage_in_the_newest_record_of_a_stream_log_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s, events = _store_with_events(data)
    path = FileLog(data, readonly=True).layout.stream_path(s)
    _flip(path, path.stat().st_size - 5)
    log = FileLog(data)
    with pytest.raises(CorruptionError):
        log.append_many([AppendTo(s, [new(progressed(9))], len(events))])
    log.close()
    assert not verify(data).ok
