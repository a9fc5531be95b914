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
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from eventstore import framewalk, framing, retention
from eventstore.errors import CorruptionError, InvalidId
from eventstore.feedread import FeedReader
from eventstore.layout import Layout, Mark, decode_mark
from eventstore.logfile import Tail, read_frames
from eventstore.records import unpack
from eventstore.verify_logs import (
    BAD_NAME,
    DIGEST_MASK,
    GONE,
    SUM_SHIFT,
    LogsSeen,
    logs_seen,
    pack_sum,
    unpack_sum,
)

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


class _Feed:
    """What the feed says of each stream, kept small while the walk runs.

    Per stream only its sum (`verify_logs.SUM_SHIFT`: version and digest of the ids); the
    state at the mark and the digests after it only for the few streams with records after
    the mark.
    """

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.after_mark: dict[str, _FromFeed] = {}

    def get(self, stream: str) -> _FromFeed | None:
        s = self.now.get(stream)
        if s is None:
            return None
        version, digest = unpack_sum(s)
        late = self.after_mark.get(stream)
        if late is None:
            return _FromFeed(version, digest, version, digest)
        late.version, late.digest = version, digest
        return late

    def pop(self, stream: str) -> None:
        self.now.pop(stream, None)
        self.after_mark.pop(stream, None)


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
    id: msgspec.Raw  # its msgpack bytes are what the digests take in
    recorded_at: msgspec.Raw
    event: _Kind


_ENVELOPES: Final = msgspec.msgpack.Decoder(list[_Envelope])
_ENVELOPE_RECORDS: Final = msgspec.msgpack.Decoder(list[list[_Envelope]])
"""Several records' payloads as one msgpack array (`DECODE_BATCH`)."""
_TOMBSTONE: Final = "job_pruned"
DECODE_BATCH: Final = 256
"""Records decoded in one call (as one msgpack array): few enough to stay in cache."""
_ARRAY: Final = struct.Struct(">BI")
"""The header of a msgpack array of up to 2**32 - 1 items (array 32)."""

HOOK_BATCH: Final = 1024
"""Envelopes handed to a `FeedHook` at a time: a whole 8 MiB chunk's (30,000 or more)
kept alive at once cost 20% of the walk in memory traffic."""


@dataclass(slots=True)
class FeedHook:
    """Hands each record of the feed walk to a second check, decoded once for both.

    `decoder` decodes a msgpack array of payloads (`DECODE_BATCH` records at a time), each
    to its envelopes: Structs with `records.RecordedEvent`'s fields in its order, `id` as
    `msgspec.Raw` (its bytes go into the digests) and an `event` with a `type` (its tag).
    After the walk `whole` says whether every record of the feed's valid prefix went to
    `on_events`, with no damage before the end.
    """

    decoder: msgspec.msgpack.Decoder[Any]
    on_events: Callable[[Any], object]
    whole: bool = False


@dataclass(slots=True)
class _Check:
    report: Report = field(default_factory=Report)

    def add(self, severity: Severity, kind: str, where: str, detail: str) -> None:
        self.report.findings.append(Finding(severity, kind, where, detail))


def verify(
    root: Path | str,
    *,
    hook: FeedHook | None = None,
    logs: Callable[[], LogsSeen | None] | None = None,
) -> Report:
    """Walk the feed and every stream log; report what is wrong, most serious first.

    `logs`, called after the feed walk, may give the stream logs read some other way (by
    this process and another at once: `shared_logs`); without it, or when it gives None,
    they are read here, after the feed walk (`verify_logs.logs_seen`).
    """
    layout = Layout(Path(root))
    layout.require()
    check = _Check()
    expected, snapshot_end, removed, resume = _walk_feed(layout, check, hook)
    seen = logs() if logs is not None else None
    _compare(layout, seen or logs_seen(layout), expected, snapshot_end, removed, check)
    # A prune that landed after the feed walk removed logs the stream walk then missed:
    # its tombstones are after the snapshot, and what was said of those streams is void.
    late = _removed_since(layout, snapshot_end, resume)
    if late:
        check.report.findings = [
            f for f in check.report.findings if f.where not in late or f.kind == "damage"
        ]
    for p in sorted(layout.quarantine.iterdir()):
        check.add("info", "set_aside", p.name, f"{p.stat().st_size} bytes set aside by recovery")
    check.report.findings.sort(key=lambda f: f.severity != "error")
    return check.report


_Resume = tuple[int, int, tuple[int, int], int]
"""Where the feed walk ended, as a `FeedReader.hint`: (position, segment, file, offset)."""


def _walk_feed(
    layout: Layout, check: _Check, hook: FeedHook | None
) -> tuple[_Feed, int, set[str], _Resume | None]:
    """Per stream, what the feed says it holds; the position the walk stopped before; the
    streams tombstones removed; and where a reader may go on from."""
    feed = _Feed()
    removed: set[str] = set()
    gaps: list[Finding] = []
    try:
        mark = decode_mark(layout.mark.read_bytes())
    except OSError:
        mark = None
    applied_before = mark.next_position if mark is not None else 1 << 62
    firsts = layout.segments(mark.segment if mark is not None else None) or [1]
    next_seq = 1
    whole = True
    resume: _Resume | None = None
    for k, first in enumerate(firsts):
        where = "feed" if first == 1 else layout.segment(first).name
        if first != next_seq:
            detail = f"starts at {first}, the segment before ends at {next_seq}"
            check.add("error", "damage", where, detail)
            whole = False
            break
        last = k == len(firsts) - 1
        walk = _Segment(feed, removed, gaps, applied_before, check.report, hook)
        tail = walk.run(layout, first, where, check)
        if tail is None:
            whole = False
            break
        next_seq = tail.next_seq
        file = (walk.inode, mark.compactions if mark is not None else -1)
        resume = (next_seq, first, file, tail.end)
        if not last:
            if tail.trailing or tail.damaged:
                check.add("error", "damage", where, f"damaged record at offset {tail.end}")
                whole = False
                break
            continue
        if mark is not None and mark.segment == first:
            if tail.end < mark.end and not tail.damaged:
                whole = False
                if _sealed_since(layout, mark):
                    break  # a prune sealed and rewrote it meanwhile: shorter, not damaged
                check.add("error", "damage", where, f"damaged record at offset {tail.end}")
            else:
                whole = whole and not tail.damaged
                _report_tail(check, where, tail)
            if tail.end > mark.end:
                check.add("info", "pending", "feed", "records after the mark await recovery")
        else:
            whole = whole and not tail.damaged
            _report_tail(check, where, tail)
    if hook is not None:
        hook.whole = whole
    check.report.findings.extend(g for g in gaps if g.where not in removed)
    for stream in removed:
        feed.pop(stream)
    return feed, next_seq, removed, resume


@dataclass(slots=True)
class _Segment:
    """The walk of one feed segment: each record's events into `feed`, gaps, tombstones."""

    feed: _Feed
    removed: set[str]
    gaps: list[Finding]
    applied_before: int
    report: Report
    hook: FeedHook | None
    inode: int = -1

    def run(self, layout: Layout, first: int, where: str, check: _Check) -> Tail | None:
        fd = os.open(layout.segment(first), os.O_RDONLY)
        try:
            self.inode = os.fstat(fd).st_ino
            if not framing.check_file_header(os.pread(fd, framing.FILE_HEADER.size, 0), 0):
                check.add("error", "bad_file", where, "the feed segment has no valid header")
                return None
            tail = Tail(0, first, 0)
            framewalk.walk(fd, framing.FILE_HEADER.size, first, tail, self.records, look_past=True)
            self.report.bytes += tail.size
            return tail
        finally:
            os.close(fd)

    def records(self, payloads: list[bytes | bytearray]) -> None:
        """The events of valid records, in order: the per-event loop of the whole check.

        Payloads are decoded DECODE_BATCH at a time, as one msgpack array of them: one
        decoder call instead of one per record.
        """
        decode = self.hook.decoder.decode if self.hook is not None else _ENVELOPE_RECORDS.decode
        on_events = self.hook.on_events if self.hook is not None else None
        now = self.feed.now
        get = now.get
        crc32 = zlib.crc32
        applied_before = self.applied_before
        events = 0
        batch: list[Any] = []  # for the hook: one call per HOOK_BATCH events or more
        more = batch.extend
        for start in range(0, len(payloads), DECODE_BATCH):
            some = payloads[start : start + DECODE_BATCH]
            for i, envelopes in enumerate(decode(_ARRAY.pack(0xDD, len(some)) + b"".join(some))):
                if on_events is not None:
                    more(envelopes)
                    if len(batch) >= HOOK_BATCH:
                        on_events(batch)
                        batch = []
                        more = batch.extend
                events += len(envelopes)
                tombstones = False
                for e in envelopes:
                    stream = e.stream
                    version = e.version
                    s = get(stream, 0)
                    if version != (s >> SUM_SHIFT) + 1:
                        detail = (
                            f"version {version} at position {e.position} follows {s >> SUM_SHIFT}"
                        )
                        self.gaps.append(Finding("error", "gap", stream, detail))
                    digest = crc32(e.id, s & DIGEST_MASK)
                    if e.position >= applied_before:
                        self._after_mark(stream, s, version, digest)
                    now[stream] = version << SUM_SHIFT | digest  # pack_sum, inline
                    if e.event.type == _TOMBSTONE:
                        tombstones = True
                if tombstones:
                    self._tombstones(some[i])
        self.report.events += events
        if on_events is not None and batch:
            on_events(batch)

    def _after_mark(self, stream: str, s: int, version: int, digest: int) -> None:
        late = self.feed.after_mark.get(stream)
        if late is None:  # the state at the mark: what an applied stream log holds
            applied_version, applied_digest = unpack_sum(s)
            late = _FromFeed(applied_version=applied_version, applied_digest=applied_digest)
            self.feed.after_mark[stream] = late
        late.pending[version] = digest

    def _tombstones(self, payload: bytes | bytearray) -> None:
        """Rare: decode the tombstones themselves."""
        for whole in unpack(bytes(payload)):
            gone = retention.removed_stream(whole.event)
            if gone is not None:
                self.removed.add(gone)


def _sealed_since(layout: Layout, mark: Mark) -> bool:
    """Whether the mark's segment was sealed or rewritten after `mark` was read."""
    try:
        now = decode_mark(layout.mark.read_bytes())
    except OSError:
        return False
    return now is not None and (now.segment, now.compactions) != (mark.segment, mark.compactions)


def _removed_since(layout: Layout, position: int, resume: _Resume | None) -> set[str]:
    """The streams tombstones at `position` or later remove (read after the stream walk).

    The reader starts where the feed walk ended (`resume`), unless the file changed since.
    """

    def current_mark() -> Mark | None:
        try:
            return decode_mark(layout.mark.read_bytes())
        except OSError:
            return None

    removed: set[str] = set()
    reader = FeedReader(layout, current_mark)
    if resume is not None:
        reader.hint = resume
    try:
        for f in reader.frames(position):
            if f.seq + f.count <= position:
                continue
            for e in unpack(f.payload):
                if e.position >= position and (gone := retention.removed_stream(e.event)):
                    removed.add(gone)
    except CorruptionError:
        pass  # the feed walk reported what was damaged when it ran
    return removed


def _compare(
    layout: Layout,
    logs: LogsSeen,
    expected: _Feed,
    snapshot_end: int,
    removed: set[str],
    check: _Check,
) -> None:
    """Compare each stream log with the feed, ignoring what was appended after the feed walk.

    A log read whole and clean (`verify_logs`) whose events all came before the feed
    walk's end and agree with the feed needs nothing more: when every log is such a one,
    and the feed's streams are exactly theirs, one comparison of the two tables says so.
    Any other, and any log of a stream the listing missed, is walked again here, now,
    record by record.
    """
    if (  # the common case: every log read whole and clean, each as the feed says
        not logs.others
        and not expected.after_mark
        and logs.clean == expected.now
        and max(logs.lasts, default=-1) < snapshot_end
    ):
        check.report.streams += len(logs.clean)
        check.report.bytes += sum(logs.sizes)
        return
    get = expected.now.get
    after_mark = expected.after_mark
    streams = agreed = known = 0  # logs; bytes of those that agree; logs the feed knows
    gone: set[str] = set()
    for log in logs.logs():
        stream = log.stream
        if log.size == BAD_NAME:
            check.add("error", "bad_file", stream.rpartition("/")[2], logs.bad[stream])
            continue
        streams += 1
        now = get(stream)
        if now is not None:
            known += 1
            if (  # the common case: read whole before the feed's end, and agreed
                now == pack_sum(log.version, log.digest)
                and 0 <= log.last < snapshot_end
                and stream not in after_mark
            ):
                agreed += log.size
                continue
        if stream in removed:  # a prune's holder died before removing it; recovery does
            # (unless the prune removed it since it was read: then it is simply gone)
            if log.size != GONE and os.path.exists(layout.stream_path(stream)):
                check.add("info", "pending", stream, "a tombstone removes it; the next writer does")
            continue
        want = expected.get(stream) or _FromFeed()
        if 0 <= log.last < snapshot_end and want.matches(log.version, log.digest) == "ok":
            agreed += log.size
            continue
        if not _check_log(layout, stream, want, snapshot_end, check):
            gone.add(stream)  # removed since the listing: a prune, its tombstone is later
    check.report.streams += streams
    check.report.bytes += agreed
    if known - sum(1 for stream in gone if stream in expected.now) == len(expected.now):
        return  # every stream of the feed has a log
    seen = {log.stream for log in logs.logs() if log.size != BAD_NAME} - gone
    for stream in expected.now:
        missing = expected.get(stream) if stream not in seen else None
        if missing is not None and missing.version:
            if _check_log(layout, stream, missing, snapshot_end, check):
                check.report.streams += 1  # created after the listing (by another process)
                continue
            severity: Severity = "info" if missing.applied_version == 0 else "error"
            check.add(
                severity,
                "pending" if severity == "info" else "disagreement",
                stream,
                f"no stream log, the feed holds {missing.version} events",
            )


def _check_log(
    layout: Layout, stream: str, want: _FromFeed, snapshot_end: int, check: _Check
) -> bool:
    """Walk one stream log record by record and say how it stands; False if it is gone."""
    try:
        path = layout.stream_file(stream)
    except InvalidId:  # a name no log can have
        return False
    walked = _walk_stream(path, stream, snapshot_end, check)
    if walked is None:
        return False
    version, digest = walked
    verdict = want.matches(version, digest)
    if verdict == "pending":
        check.add("info", "pending", stream, "the feed's newest events await recovery")
    elif verdict is None:
        check.add(
            "error",
            "disagreement",
            stream,
            f"stream log holds {version} events, the feed {want.version}, or other ids",
        )
    return True


def _walk_stream(
    path: str, stream: str, snapshot_end: int, check: _Check
) -> tuple[int, int] | None:
    """One stream log, every record, with its torn tail or damage: the general case."""
    digest = 0
    version = 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, framing.FILE_HEADER.size, 0)
        check.report.bytes += size
        if size < framing.FILE_HEADER.size and framing.file_header(1).startswith(head):
            if size:
                check.add("info", "torn_tail", stream, f"{size} bytes of a torn header")
            return 0, 0
        if not framing.check_file_header(head, 1):
            check.add("error", "bad_file", stream, "no valid header")
            return 0, 0
        tail = Tail(0, 1, 0)
        for f in read_frames(fd, framing.FILE_HEADER.size, 1, tail, look_past=True):
            for e in _ENVELOPES.decode(f.payload):
                if e.stream != stream:
                    check.add("error", "disagreement", stream, f"holds an event of {e.stream}")
                if e.position < snapshot_end:  # later ones came after the feed was read
                    digest = zlib.crc32(e.id, digest)
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
