"""A machine restart after a prune rewrote the segment the checkpoint points into.

The checkpoint records how far the stream logs were synced. A prune rewrites sealed
segments (their offsets move), so recovery after a restart must find that point by
position, never trust an offset in a rewritten file, and never cut a sealed segment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventstore import NO_STREAM, AppendTo, new
from eventstore.errors import CorruptionError
from eventstore.events import JobCompleted
from eventstore.filelog import FEED_START, FileLog
from eventstore.verify import verify
from tests.eventstore.helpers import job_stream, requested
from tests.eventstore.test_prune import SMALL_SEGMENT, prune_batch


def _jobs(log: FileLog, n: int) -> list[str]:
    out = []
    for i in range(n):
        s = job_stream()
        log.append_many([AppendTo(s, [new(requested(pad=50))], NO_STREAM)])
        log.append_many([AppendTo(s, [new(JobCompleted(result=i))], 1)])
        out.append(s)
    return out


def _crash(log: FileLog) -> None:
    """Stop using a store without closing it: the checkpoint stays as it was."""
    log._closed = True
    log._release()


def _fake_reboot(data: Path) -> None:
    cp = json.loads((data / "checkpoint").read_text())
    cp["boot_id"] = "a-previous-boot"
    (data / "checkpoint").write_text(json.dumps(cp))


def test_restart_after_a_rewrite_of_the_checkpoints_segment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    old = _jobs(log, 6)
    log.close()  # the checkpoint now points at an offset inside feed.log
    cp_end = json.loads((data / "checkpoint").read_text())["end"]
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    kept = _jobs(log, 20)  # feed.log is sealed, later segments follow
    log.prune(prune_batch(old[:2]))  # feed.log is rewritten: the offset moved
    assert (data / "feed" / "feed.log").stat().st_size != cp_end
    before = log.read_all(1, 10_000)
    head = log.head()
    _crash(log)
    _fake_reboot(data)

    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    try:
        assert log.read_all(1, 10_000) == before
        assert list((data / "quarantine").iterdir()) == []
        for s in old[2:] + kept:
            assert [e.version for e in log.read_stream(s)] == [1, 2]
        fresh = log.append_many([AppendTo(job_stream(), [new(requested())], NO_STREAM)])
        assert fresh[0][0].position == head + 1  # no position given out twice
    finally:
        log.close()
    report = verify(data)
    assert report.ok, report.findings


def test_restart_re_applies_stream_writes_lost_after_the_checkpoint(tmp_path: Path) -> None:
    """The walk from the segment's start still re-applies what a restart lost."""
    data = tmp_path / "data"
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    old = _jobs(log, 6)
    log.close()
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    kept = _jobs(log, 20)
    log.prune(prune_batch(old[:2]))
    _crash(log)
    # A stream log lost its last record (its page cache was never written back).
    lost = log._path(kept[-1])
    events = log.read_stream(kept[-1])
    assert len(events) == 2
    raw = Path(lost).read_bytes()
    Path(lost).write_bytes(raw[: len(raw) - 1])  # torn: the second record is incomplete
    _fake_reboot(data)
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    try:
        assert log.read_stream(kept[-1]) == events
    finally:
        log.close()
    assert verify(data).ok


def test_a_damaged_sealed_segment_is_never_cut_back(tmp_path: Path) -> None:
    """A sealed segment with a bad record is damage: refused, not truncated as a torn tail."""
    data = tmp_path / "data"
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    _jobs(log, 30)
    log.close()
    feed = data / "feed" / "feed.log"
    raw = feed.read_bytes()
    feed.write_bytes(raw[:-5])  # the sealed first segment lost the end of its last record
    size = len(raw) - 5
    cp = json.loads((data / "checkpoint").read_text())
    cp.update(boot_id="a-previous-boot", end=FEED_START, next_position=1, segment=1)
    (data / "checkpoint").write_text(json.dumps(cp))
    with pytest.raises(CorruptionError):
        FileLog(data, segment_bytes=SMALL_SEGMENT)
    assert feed.stat().st_size == size
    assert list((data / "quarantine").iterdir()) == []
