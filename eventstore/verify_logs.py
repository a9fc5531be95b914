"""Every stream log read whole and summed up, for `verify` to hold against the feed.

Most logs are a few small records: each is read in one `preadv` into one buffer and its
records checked in one loop (`framewalk.chain`), which leaves its version, the digest of
its ids and its last position. Any log that is not that simple (a torn tail, damage, a
foreign event, a large file) is only marked, and `verify` walks it record by record
itself. Reading no feed, this can run in another process while `verify` walks the feed:
`python -m eventstore.verify_logs DATA` writes the summary as msgpack to standard output.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
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


class LogsSeen(msgspec.Struct):
    """Every stream log in `Layout.stream_files` order; why each bad file name is bad."""

    logs: list[LogSeen] = []
    bad: dict[str, str] = {}


class _Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What is compared of a stored envelope; the time and event after it are skipped."""

    position: int
    stream: str
    version: int
    id: msgspec.Raw  # its msgpack bytes are what the digests take in


_EVENTS: Final = msgspec.msgpack.Decoder(list[_Event])


def logs_seen(layout: Layout) -> LogsSeen:
    """Read every stream log of the data directory (see the module's docstring)."""
    seen = LogsSeen()
    buf = bytearray(WHOLE_FILE)
    add = seen.logs.append
    for shard, base, names in _listing(layout):
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in names:
                try:
                    stream = _stream_of(name, shard, base)
                except InvalidId as exc:  # keyed by shard too: one name may be in two
                    seen.bad[f"{shard}/{name}"] = str(exc)
                    add(LogSeen(f"{shard}/{name}", BAD_NAME))
                    continue
                try:
                    add(_read(dir_fd, name, stream, buf))
                except FileNotFoundError:
                    add(LogSeen(stream, GONE))
        finally:
            os.close(dir_fd)
    return seen


def _listing(layout: Layout) -> Iterator[tuple[str, str, list[str]]]:
    """(shard, its directory, its log file names) in `Layout.stream_files` order, without pathlib.

    Paths of 100,000s of files as `Path` objects (built, then sorted) cost more than
    reading the files.
    """
    root = str(layout.streams)
    for shard in sorted(os.listdir(root)):
        base = f"{root}/{shard}"
        yield shard, base, sorted(n for n in os.listdir(base) if n.endswith(".log") and n != ".log")


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
    return LogSeen(stream, size, version, digest, last)


def main(argv: Sequence[str]) -> int:
    """`python -m eventstore.verify_logs DATA`: the summary as msgpack on standard output."""
    sys.stdout.buffer.write(msgspec.msgpack.encode(logs_seen(Layout(Path(argv[0])))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
