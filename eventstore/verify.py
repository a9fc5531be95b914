"""A read-only check of a whole file store: damage, set-aside tails, gaps, disagreement.

It takes no lock and changes nothing, so it can run beside live `serve` and `worker`
processes. A torn tail (a writer died mid-append) is reported as `info`: it was never
acknowledged and the next writer sets it aside. Everything else found is an `error`.
Holes a prune left are not gaps: the records around them still chain, and a stream a
tombstone removed may have left the feed wholly, partly (a prune that died half way,
finished by the next one) or not yet; it has no log to compare.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import msgspec

from eventstore import framing, retention
from eventstore.errors import CorruptionError, InvalidId
from eventstore.feedread import FeedReader
from eventstore.layout import Layout, Mark, decode_mark
from eventstore.logfile import Tail, read_frames
from eventstore.records import unpack

Severity = Literal["error", "info"]


class Finding(msgspec.Struct, frozen=True):
    severity: Severity
    kind: str  # damage | gap | torn_tail | set_aside | disagreement | pending | bad_file
    where: str  # "feed" or a stream name or file name
    detail: str


class Report(msgspec.Struct):
    streams: int = 0
    events: int = 0
    bytes: int = 0
    findings: list[Finding] = []

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


@dataclass(slots=True)
class _FromFeed:
    version: int = 0
    digest: int = 0
    applied_version: int = 0  # version before the not-yet-applied tail of the feed
    applied_digest: int = 0
    pending: dict[int, int] = field(default_factory=dict)  # digest at each unapplied version

    def matches(self, version: int, digest: int) -> str | None:
        """'ok', 'pending' (a prefix a dead writer left, recovery completes it) or None."""
        if (version, digest) == (self.version, self.digest):
            return "ok"
        if (version, digest) == (self.applied_version, self.applied_digest):
            return "pending"
        return "pending" if self.pending.get(version) == digest else None


class _Kind(msgspec.Struct, frozen=True, gc=False):
    """Only the tag of a stored event: the rest of it is skipped, never decoded."""

    type: str


class _Envelope(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A stored envelope as the check reads it: positions, versions and ids.

    Decoding every event (its dicts, its datetimes) was most of the check's time; the
    time stays raw and the event is read only as far as its tag.
    """

    position: int
    stream: str
    version: int
    id: str
    recorded_at: msgspec.Raw
    event: _Kind


_ENVELOPES: Final = msgspec.msgpack.Decoder(list[_Envelope])
_TOMBSTONE: Final = "job_pruned"


@dataclass(slots=True)
class _Check:
    report: Report = field(default_factory=Report)

    def add(self, severity: Severity, kind: str, where: str, detail: str) -> None:
        self.report.findings.append(Finding(severity, kind, where, detail))


def verify(root: Path | str) -> Report:
    """Walk the feed and every stream log; report what is wrong, most serious first."""
    layout = Layout(Path(root))
    layout.require()
    check = _Check()
    expected, snapshot_end, removed = _walk_feed(layout, check)
    _walk_streams(layout, expected, snapshot_end, removed, check)
    # A prune that landed after the feed walk removed logs the stream walk then missed:
    # its tombstones are after the snapshot, and what was said of those streams is void.
    late = _removed_since(layout, snapshot_end)
    if late:
        check.report.findings = [
            f for f in check.report.findings if f.where not in late or f.kind == "damage"
        ]
    for p in sorted(layout.quarantine.iterdir()):
        check.add("info", "set_aside", p.name, f"{p.stat().st_size} bytes set aside by recovery")
    check.report.findings.sort(key=lambda f: f.severity != "error")
    return check.report


def _walk_feed(layout: Layout, check: _Check) -> tuple[dict[str, _FromFeed], int, set[str]]:
    """Per stream, what the feed says it holds; the position the walk stopped before; and
    the streams tombstones removed."""
    per_stream: dict[str, _FromFeed] = {}
    removed: set[str] = set()
    gaps: list[Finding] = []
    try:
        mark = decode_mark(layout.mark.read_bytes())
    except OSError:
        mark = None
    applied_before = mark.next_position if mark is not None else 1 << 62
    firsts = layout.segments(mark.segment if mark is not None else None) or [1]
    next_seq = 1
    for k, first in enumerate(firsts):
        where = "feed" if first == 1 else layout.segment(first).name
        if first != next_seq:
            detail = f"starts at {first}, the segment before ends at {next_seq}"
            check.add("error", "damage", where, detail)
            break
        last = k == len(firsts) - 1
        tail = _walk_segment(layout, first, where, per_stream, removed, gaps, applied_before, check)
        if tail is None:
            break
        next_seq = tail.next_seq
        if not last:
            if tail.trailing or tail.damaged:
                check.add("error", "damage", where, f"damaged record at offset {tail.end}")
                break
            continue
        if mark is not None and mark.segment == first:
            if tail.end < mark.end and not tail.damaged:
                if _sealed_since(layout, mark):
                    break  # a prune sealed and rewrote it meanwhile: shorter, not damaged
                check.add("error", "damage", where, f"damaged record at offset {tail.end}")
            else:
                _report_tail(check, where, tail)
            if tail.end > mark.end:
                check.add("info", "pending", "feed", "records after the mark await recovery")
        else:
            _report_tail(check, where, tail)
    check.report.findings.extend(g for g in gaps if g.where not in removed)
    for stream in removed:
        per_stream.pop(stream, None)
    return per_stream, next_seq, removed


def _walk_segment(
    layout: Layout,
    first: int,
    where: str,
    per_stream: dict[str, _FromFeed],
    removed: set[str],
    gaps: list[Finding],
    applied_before: int,
    check: _Check,
) -> Tail | None:
    fd = os.open(layout.segment(first), os.O_RDONLY)
    try:
        if not framing.check_file_header(os.pread(fd, framing.FILE_HEADER.size, 0), 0):
            check.add("error", "bad_file", where, "the feed segment has no valid header")
            return None
        tail = Tail(0, first, 0)
        for f in read_frames(fd, framing.FILE_HEADER.size, first, tail, look_past=True):
            envelopes = _ENVELOPES.decode(f.payload)
            if any(e.event.type == _TOMBSTONE for e in envelopes):
                for whole in unpack(f.payload):  # rare: decode the tombstones themselves
                    gone = retention.removed_stream(whole.event)
                    if gone is not None:
                        removed.add(gone)
            for e in envelopes:
                s = per_stream.get(e.stream)
                if s is None:
                    s = per_stream[e.stream] = _FromFeed()
                if e.version != s.version + 1:
                    detail = f"version {e.version} at position {e.position} follows {s.version}"
                    gaps.append(Finding("error", "gap", e.stream, detail))
                s.version = e.version
                s.digest = zlib.crc32(e.id.encode(), s.digest)
                if e.position < applied_before:
                    s.applied_version, s.applied_digest = s.version, s.digest
                else:
                    s.pending[s.version] = s.digest
                check.report.events += 1
        check.report.bytes += tail.size
        return tail
    finally:
        os.close(fd)


def _sealed_since(layout: Layout, mark: Mark) -> bool:
    """Whether the mark's segment was sealed or rewritten after `mark` was read."""
    try:
        now = decode_mark(layout.mark.read_bytes())
    except OSError:
        return False
    return now is not None and (now.segment, now.compactions) != (mark.segment, mark.compactions)


def _removed_since(layout: Layout, position: int) -> set[str]:
    """The streams tombstones at `position` or later remove (read after the stream walk)."""

    def current_mark() -> Mark | None:
        try:
            return decode_mark(layout.mark.read_bytes())
        except OSError:
            return None

    removed: set[str] = set()
    try:
        for f in FeedReader(layout, current_mark).frames(position):
            for e in unpack(f.payload):
                if e.position >= position and (gone := retention.removed_stream(e.event)):
                    removed.add(gone)
    except CorruptionError:
        pass  # the feed walk reported what was damaged when it ran
    return removed


def _walk_streams(
    layout: Layout,
    expected: dict[str, _FromFeed],
    snapshot_end: int,
    removed: set[str],
    check: _Check,
) -> None:
    """Compare each stream log with the feed, ignoring what was appended after the feed walk."""
    seen: set[str] = set()
    for name, path in _stream_logs(layout):
        try:
            stream = _stream_of(layout, name, path)
        except InvalidId as exc:
            check.add("error", "bad_file", name, str(exc))
            continue
        seen.add(stream)
        check.report.streams += 1
        if stream in removed:  # a prune's holder died before removing it; recovery does
            check.add("info", "pending", stream, "a tombstone removes it; the next writer does")
            continue
        walked = _walk_stream(path, stream, snapshot_end, check)
        if walked is None:  # removed since the listing: a prune, and its tombstone is later
            seen.discard(stream)
            continue
        version, digest = walked
        want = expected.get(stream, _FromFeed())
        verdict = want.matches(version, digest)
        if verdict == "ok":
            continue
        if verdict == "pending":
            check.add("info", "pending", stream, "the feed's newest events await recovery")
        else:
            check.add(
                "error",
                "disagreement",
                stream,
                f"stream log holds {version} events, the feed {want.version}, or other ids",
            )
    for stream, want in expected.items():
        if stream not in seen and want.version:
            severity: Severity = "info" if want.applied_version == 0 else "error"
            check.add(
                severity,
                "pending" if severity == "info" else "disagreement",
                stream,
                f"no stream log, the feed holds {want.version} events",
            )


def _stream_logs(layout: Layout) -> Iterator[tuple[str, str]]:
    """(file name, path) of every stream log, in `Layout.stream_files` order, without pathlib.

    Paths of 100,000s of files as `Path` objects (built, then sorted) cost more than
    reading the files.
    """
    root = str(layout.streams)
    for shard in sorted(os.listdir(root)):
        base = f"{root}/{shard}"
        for name in sorted(os.listdir(base)):
            if name.endswith(".log") and name != ".log":
                yield name, f"{base}/{name}"


def _stream_of(layout: Layout, name: str, path: str) -> str:
    """`Layout.stream_of` on a path string: InvalidId unless the log is where it belongs."""
    stream = ":".join(name[: -len(".log")].split("."))
    if layout.stream_file(stream) != path:
        raise InvalidId(f"stream log in the wrong place: {path}")
    return stream


def _whole_chain(data: bytes, seq: int) -> list[memoryview] | None:
    """The payloads of a log read whole, if it is nothing but valid records chained from `seq`.

    The common case, checked in one loop; anything else (a torn tail, damage) returns None
    and is left to `read_frames`, which tells those apart.
    """
    view = memoryview(data)
    end = len(data)
    off = framing.FILE_HEADER.size
    size = framing.HEADER.size
    header = framing.HEADER.unpack_from
    payloads = []
    while off < end:
        if end - off < size:
            return None
        magic, fmt, _flags, length, first, count, crc = header(data, off)
        body = off + size
        stop = body + length
        if magic != framing.MAGIC or fmt != framing.FORMAT or first != seq or stop > end:
            return None
        if zlib.crc32(view[body:stop], zlib.crc32(view[off + 2 : off + 20])) != crc:
            return None
        payloads.append(view[body:stop])
        off, seq = stop, seq + count
    return payloads


WHOLE_FILE: Final = 1 << 20
"""Stream logs up to this size are read in one `pread`, most of them: one or a few records."""


def _walk_stream(
    path: str, stream: str, snapshot_end: int, check: _Check
) -> tuple[int, int] | None:
    digest = 0
    version = 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size if size <= WHOLE_FILE else framing.FILE_HEADER.size, 0)
        head = data[: framing.FILE_HEADER.size]
        check.report.bytes += size
        if size < framing.FILE_HEADER.size and framing.file_header(1).startswith(head):
            if size:
                check.add("info", "torn_tail", stream, f"{size} bytes of a torn header")
            return 0, 0
        if not framing.check_file_header(head, 1):
            check.add("error", "bad_file", stream, "no valid header")
            return 0, 0
        whole = _whole_chain(data, 1) if len(data) == size else None
        if whole is not None:
            for payload in whole:
                for e in _ENVELOPES.decode(payload):
                    if e.stream != stream:
                        check.add("error", "disagreement", stream, f"holds an event of {e.stream}")
                    if e.position < snapshot_end:  # later ones came after the feed was read
                        digest = zlib.crc32(e.id.encode(), digest)
                        version = e.version
            return version, digest
        tail = Tail(0, 1, 0)
        for f in read_frames(fd, framing.FILE_HEADER.size, 1, tail, look_past=True):
            for e in _ENVELOPES.decode(f.payload):
                if e.stream != stream:
                    check.add("error", "disagreement", stream, f"holds an event of {e.stream}")
                if e.position < snapshot_end:  # later ones came after the feed was read
                    digest = zlib.crc32(e.id.encode(), digest)
                    version = e.version
        _report_tail(check, stream, tail)
        return version, digest
    finally:
        os.close(fd)


def _report_tail(check: _Check, where: str, tail: Tail) -> None:
    if tail.damaged:
        check.add("error", "damage", where, f"damage at offset {tail.end} before valid records")
    elif tail.trailing > 0:
        check.add("info", "torn_tail", where, f"{tail.trailing} bytes after offset {tail.end}")
