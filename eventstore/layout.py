"""Where the file store keeps things under its data directory, and the small files in it.

DATA/jobtrail.json           marks a jobtrail data directory (format, creation time)
DATA/feed/feed.log           the commit log: every append, in global order
DATA/feed/feed.mark          end of the applied feed (offset, next position)
DATA/checkpoint              boot id + a feed offset whose stream writes are synced
DATA/streams/<hh>/<name>.log one log per stream, hh = 2 hex digits of its name's CRC
DATA/quarantine/             torn tails set aside by recovery, never deleted
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Final, NamedTuple

from eventstore import streams
from eventstore.errors import InvalidId, StorageError

MARKER: Final = "jobtrail.json"
SHARDS: Final = 256


class NotADataDirectory(StorageError):
    """The path is missing or holds something other than a jobtrail data directory."""

    code = "NotADataDirectory"


class Layout:
    """Paths of one data directory; the only place that turns stream names into paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.feed_dir = root / "feed"
        self.feed = self.feed_dir / "feed.log"
        self.mark = self.feed_dir / "feed.mark"
        self.checkpoint = root / "checkpoint"
        self.streams = root / "streams"
        self._streams_str = str(self.streams)
        self.quarantine = root / "quarantine"

    def stream_path(self, stream: str) -> Path:
        """The log file of a stream; the name is validated before it becomes a path."""
        return Path(self.stream_file(stream))

    def stream_file(self, stream: str) -> str:
        """`stream_path` as a string, cheaply (it is on the append path)."""
        streams.parse(stream)
        shard = zlib.crc32(stream.encode()) % SHARDS
        return f"{self._streams_str}/{shard:02x}/{stream.replace(':', '.')}.log"

    def stream_of(self, path: Path) -> str:
        """The stream name of a stream log path (the inverse of `stream_path`)."""
        if path.suffix != ".log":
            raise InvalidId(f"not a stream log: {path.name}")
        name = ":".join(path.stem.split("."))
        if self.stream_path(name) != path:
            raise InvalidId(f"stream log in the wrong place: {path}")
        return name

    def stream_files(self) -> list[Path]:
        out: list[Path] = []
        for shard in sorted(self.streams.iterdir()):
            out.extend(sorted(p for p in shard.iterdir() if p.suffix == ".log"))
        return out

    def is_data_dir(self) -> bool:
        return (self.root / MARKER).is_file()

    def create(self) -> None:
        """Make the directory tree (idempotent); shard directories exist before any watcher."""
        if self.root.exists() and not self.is_data_dir():
            if any(self.root.iterdir()):
                raise NotADataDirectory(
                    f"{self.root} is not empty and not a jobtrail data directory"
                )
        for d in (self.root, self.feed_dir, self.streams, self.quarantine):
            d.mkdir(parents=True, exist_ok=True)
        for i in range(SHARDS):
            (self.streams / f"{i:02x}").mkdir(exist_ok=True)
        if not self.is_data_dir():
            info = {"format": 1, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            write_atomic(self.root / MARKER, json.dumps(info).encode() + b"\n")
        fsync_dir(self.root)

    def require(self) -> None:
        if not self.root.is_dir():
            raise NotADataDirectory(f"{self.root} does not exist")
        if not self.is_data_dir():
            raise NotADataDirectory(f"{self.root} is not a jobtrail data directory")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def boot_id() -> str:
    """Changes when the machine restarts: then unsynced page-cache writes may be lost."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


class Mark(NamedTuple):
    """How far the feed is written and applied to the stream logs.

    `generation` moves on with every change any lock holder makes to the files, so a
    process that finds it unchanged knows its cached stream versions still hold.
    """

    end: int
    next_position: int
    generation: int = 0


_MARK = struct.Struct("<QQQ")


def encode_mark(mark: Mark) -> bytes:
    body = _MARK.pack(*mark)
    return body + zlib.crc32(body).to_bytes(4, "little")


def decode_mark(data: bytes) -> Mark | None:
    if len(data) < _MARK.size + 4:
        return None
    body = data[: _MARK.size]
    if zlib.crc32(body).to_bytes(4, "little") != data[_MARK.size : _MARK.size + 4]:
        return None
    return Mark(*_MARK.unpack(body))


class Checkpoint(NamedTuple):
    boot_id: str
    end: int
    next_position: int


def read_checkpoint(path: Path) -> Checkpoint | None:
    try:
        raw = json.loads(path.read_bytes())
        return Checkpoint(str(raw["boot_id"]), int(raw["end"]), int(raw["next_position"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_checkpoint(path: Path, cp: Checkpoint) -> None:
    write_atomic(path, json.dumps(cp._asdict()).encode())
