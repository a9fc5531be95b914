"""Every stream log read whole and summed up, for `verify` to hold against the feed.

Most logs are a few small records: each is read in one `preadv` into one buffer and its
records checked in one loop (`framewalk.chain`), which leaves its version, the digest of
its ids and its last position. Any log that is not that simple (a torn tail, damage, a
foreign event, a large file) is only marked, and `verify` walks it record by record
itself. Reading no feed, this can run in another process while `verify` walks the feed,
a shard directory at a time (`shared_logs`).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from itertools import islice
from typing import Final

import msgspec

from eventstore import framewalk, framing, streams
from eventstore.errors import InvalidId
from eventstore.layout import SHARDS, Layout

WHOLE_FILE: Final = 1 << 20
"""Logs shorter than this are read in one call, nearly all of them: one or a few records."""

LARGE_FILE: Final = 64 << 20
"""Logs up to this size are read whole; larger ones `verify` walks a chunk at a time."""

GONE: Final = -1
"""`LogSeen.size` of a log removed between the listing and its reading."""

BAD_NAME: Final = -2
"""`LogSeen.size` of a file that is no stream's log: `stream` holds its file name."""

_HEAD: Final = framing.file_header(framing.KIND_STREAM)
_SHARDS: Final = tuple(f"{shard:02x}" for shard in range(SHARDS))
_JOB_LOG: Final = re.compile(
    r"job\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.log"
)
"""The file name of a valid job stream's log: `streams.job` of a lowercase UUID."""


SUM_SHIFT: Final = 32
"""A stream's sum is one int: the version its events reach, above the 32 bits of the
CRC-32 of their ids in order (`pack_sum`). Ints, rather than pairs in objects, make the
two tables of 200,000 streams quick to build and to compare. `verify`'s walk of the feed
packs them inline, with these two constants."""

DIGEST_MASK: Final = (1 << SUM_SHIFT) - 1

_SIMPLE_VERSIONS: Final = range(1 << 31)
"""Versions a log's sum may hold (msgpack carries 64-bit ints); any other is walked."""


def pack_sum(version: int, digest: int) -> int:
    return version << SUM_SHIFT | digest


def unpack_sum(summed: int) -> tuple[int, int]:
    """(version, digest)"""
    return summed >> SUM_SHIFT, summed & DIGEST_MASK


class LogSeen(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One stream log: its size, and the version and digest its events reach.

    `last` is the position of its last event, or -1 when the log is not simple and must
    be walked record by record.
    """

    stream: str
    size: int
    version: int = 0
    digest: int = 0
    last: int = -1


class LogsSeen(msgspec.Struct, array_like=True):
    """Stream logs as `logs_seen` found them, in `Layout.stream_files` order.

    `clean` maps the stream of each simple log to its sum (`SUM_SHIFT`), in the listing's
    order, with `sizes` and `lasts` beside it in the same order: the shape of `verify`'s
    own table of the feed, so that the two are held against each other in one comparison.
    `others` are every other file, each with its place in the listing (counted from 0 over
    `files`); `bad` says why each bad file name is bad.
    """

    clean: dict[str, int] = {}
    sizes: list[int] = []
    lasts: list[int] = []
    others: list[tuple[int, LogSeen]] = []
    bad: dict[str, str] = {}
    files: int = 0

    def logs(self) -> Iterator[LogSeen]:
        """Every log, in the listing's order (each clean one built anew)."""
        clean = zip(self.clean.items(), self.sizes, self.lasts, strict=True)
        at = 0
        for index, other in self.others:
            for (stream, s), size, last in islice(clean, index - at):
                yield LogSeen(stream, size, *unpack_sum(s), last)
            yield other
            at = index + 1
        for (stream, s), size, last in clean:
            yield LogSeen(stream, size, *unpack_sum(s), last)

    def extend(self, more: LogsSeen) -> None:
        """`more`'s logs after these (those of later shards)."""
        self.clean.update(more.clean)
        self.sizes += more.sizes
        self.lasts += more.lasts
        self.others += [(self.files + index, log) for index, log in more.others]
        self.bad.update(more.bad)
        self.files += more.files


class _Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What is compared of a stored envelope; the time and event after it are skipped."""

    position: int
    stream: str
    version: int
    id: msgspec.Raw  # its msgpack bytes are what the digests take in


_EVENTS: Final = msgspec.msgpack.Decoder(list[_Event])


def logs_seen(layout: Layout) -> LogsSeen:
    """Read every stream log of the data directory (see the module's docstring)."""
    shards = Shards(layout)
    return joined([(index, shards.read(index)) for index in range(len(shards.names))])


class Shards:
    """The shard directories of `streams/`, listed once, each read on demand."""

    def __init__(self, layout: Layout) -> None:
        self._root = str(layout.streams)
        self.names = sorted(os.listdir(self._root))
        self._buf = bytearray(WHOLE_FILE)

    def read(self, index: int) -> LogsSeen:
        shard = self.names[index]
        return _read_shard(shard, f"{self._root}/{shard}", self._buf)


def joined(parts: list[tuple[int, LogsSeen]]) -> LogsSeen:
    """The logs of shards read apart, in shard order."""
    seen = LogsSeen()
    for _, part in sorted(parts, key=lambda part: part[0]):
        seen.extend(part)
    return seen


def _read_shard(shard: str, base: str, buf: bytearray) -> LogsSeen:
    """The logs of one shard directory, in name order."""
    names = sorted(n for n in os.listdir(base) if n.endswith(".log") and n != ".log")
    clean: dict[str, int] = {}
    sizes: list[int] = []
    lasts: list[int] = []
    others: list[tuple[int, LogSeen]] = []
    bad: dict[str, str] = {}
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index, name in enumerate(names):
            try:
                stream = _stream_of(name, shard, base)
            except InvalidId as exc:  # keyed by shard too: one name may be in two
                bad[f"{shard}/{name}"] = str(exc)
                others.append((index, LogSeen(f"{shard}/{name}", BAD_NAME)))
                continue
            try:
                log = _read(dir_fd, name, stream, buf)
            except FileNotFoundError:
                log = LogSeen(stream, GONE)
            if log.last < 0:
                others.append((index, log))
            else:  # one name per stream in a shard: `clean` never has it yet
                clean[stream] = pack_sum(log.version, log.digest)
                sizes.append(log.size)
                lasts.append(log.last)
    finally:
        os.close(dir_fd)
    return LogsSeen(clean, sizes, lasts, others, bad, len(names))


def _stream_of(name: str, shard: str, base: str) -> str:
    """`Layout.stream_of` on a file name: InvalidId unless the log is where it belongs.

    As `Layout.stream_file`, without building the path: a valid name, in its shard. A
    job's log (most of them) is told valid by one pattern, the rest by `streams.parse`.
    """
    if _JOB_LOG.fullmatch(name) is not None:
        stream = f"{streams.JOB}:{name[4:-4]}"
    else:
        stream = ":".join(name[: -len(".log")].split("."))
        streams.parse(stream)
    if ":" in name or _SHARDS[zlib.crc32(stream.encode()) % SHARDS] != shard:
        raise InvalidId(f"stream log in the wrong place: {base}/{name}")
    return stream


def _read(dir_fd: int, name: str, stream: str, buf: bytearray) -> LogSeen:
    """One log summed up, or marked to be walked when it is not a clean, small one."""
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        size = os.preadv(fd, [buf], 0)
        data: bytes | bytearray = buf
        if size == len(buf):  # a large log (a site's usage): read whole if it is not huge
            size = os.fstat(fd).st_size
            if size > LARGE_FILE:
                return LogSeen(stream, size)
            data = os.pread(fd, size, 0)
            size = len(data)
    finally:
        os.close(fd)
    if size < len(_HEAD) or not data.startswith(_HEAD):
        return LogSeen(stream, size)
    payloads, end, _ = framewalk.chain(data, len(_HEAD), size, 1)
    if end != size:
        return LogSeen(stream, size)
    crc32 = zlib.crc32
    version = digest = last = 0
    for payload in payloads:
        for e in _EVENTS.decode(payload):
            if e.stream != stream:
                return LogSeen(stream, size)
            digest = crc32(e.id, digest)
            version = e.version
            last = e.position
    if version not in _SIMPLE_VERSIONS:
        return LogSeen(stream, size)
    return LogSeen(stream, size, version, digest, last)
