"""Where the file store keeps things under its data directory, and the small files in it.

DATA/jobtrail.json           marks a jobtrail data directory (format, creation time)
DATA/feed/feed.log           the commit log's first segment: every append, in global order
DATA/feed/feed-<pos>.log     later segments, each named by its first position (20 digits)
DATA/feed/feed.mark          end of the applied feed (segment, offset, next position); locked
DATA/feed/prune.todo         segments prunes still have to rewrite (retention.py)
DATA/checkpoint              boot id + a feed segment and position up to which stream
                             writes are synced (recovery starts at that segment's start)
DATA/streams/<hh>/<name>.log one log per stream, hh = 2 hex digits of its name's CRC
DATA/quarantine/             torn tails set aside by recovery, never deleted
"""

from __future__ import annotations

import fcntl
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
# The data directory's format, in jobtrail.json. 1: one feed file, locked on feed.log.
# 2: feed segments, the lock on feed.mark and a 44-byte mark; a format-1 binary would
# neither exclude a format-2 one nor read its mark, so the upgrade needs every process
# stopped (docs/storage.md, "Formats"), and a binary refuses a format newer than its own.
FORMAT: Final = 2


class NotADataDirectory(StorageError):
    """The path is missing or holds something other than a jobtrail data directory."""

    code = "NotADataDirectory"


class NewerFormat(NotADataDirectory):
    """The data directory was written by a newer jobtrail, whose files this one misreads."""

    code = "NewerFormat"


class Layout:
    """Paths of one data directory; the only place that turns stream names into paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.feed_dir = root / "feed"
        self.feed = self.feed_dir / "feed.log"
        self.mark = self.feed_dir / "feed.mark"
        self.prune_lock = self.feed_dir / "prune.lock"
        self.prune_todo = self.feed_dir / "prune.todo"
        self.checkpoint = root / "checkpoint"
        self.streams = root / "streams"
        self._streams_str = str(self.streams)
        self.quarantine = root / "quarantine"

    def segment(self, first: int) -> Path:
        """The feed segment whose first position is `first` (the first one keeps its old name)."""
        return self.feed if first == 1 else self.feed_dir / f"feed-{first:020d}.log"

    def segments(self, upto: int | None = None) -> list[int]:
        """First positions of the feed's segments, in order; none after `upto` when given.

        A segment after the mark's was left by a holder that died while starting it: it
        holds no record, and the next rollover removes it.
        """
        firsts = []
        for name in os.listdir(self.feed_dir):
            first = _segment_first(name)
            if first is not None and (upto is None or first <= upto):
                firsts.append(first)
        return sorted(firsts)

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
            info = {
                "format": FORMAT,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_atomic(self.root / MARKER, json.dumps(info).encode() + b"\n")
        fsync_dir(self.root)

    def require(self) -> int:
        """Check this is a data directory this jobtrail can read; its format."""
        if not self.root.is_dir():
            raise NotADataDirectory(f"{self.root} does not exist")
        if not self.is_data_dir():
            raise NotADataDirectory(f"{self.root} is not a jobtrail data directory")
        found = self.format()
        if found > FORMAT:
            raise NewerFormat(
                f"{self.root} has data directory format {found}, written by a newer jobtrail; "
                f"this one reads formats up to {FORMAT}: run the newer jobtrail"
            )
        return found

    def format(self) -> int:
        """The format jobtrail.json names (1 when it names none: the first one)."""
        try:
            info = json.loads((self.root / MARKER).read_bytes())
            return int(info.get("format", 1)) if isinstance(info, dict) else 1
        except (OSError, ValueError, TypeError) as exc:
            raise NotADataDirectory(f"{self.root / MARKER} cannot be read: {exc}") from exc

    def upgrade(self) -> None:
        """Move a format-1 directory to this format (a writer, on open).

        Format 1 locked feed.log, this one locks feed.mark, so the two would not exclude
        each other: every process on the directory must be stopped for the upgrade. The
        lock of format 1 is held meanwhile, so at least no old commit is half done.
        """
        if self.format() >= FORMAT:
            return
        try:
            fd = os.open(self.feed, os.O_RDONLY)
        except FileNotFoundError:
            fd = os.open(self.root / MARKER, os.O_RDONLY)  # no feed yet: nothing to exclude
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.format() >= FORMAT:
                return
            info = json.loads((self.root / MARKER).read_bytes())
            info["format"] = FORMAT
            info["upgraded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            write_atomic(self.root / MARKER, json.dumps(info).encode() + b"\n")
        finally:
            os.close(fd)


def _segment_first(name: str) -> int | None:
    if name == "feed.log":
        return 1
    if name.startswith("feed-") and name.endswith(".log") and len(name) == 29:
        digits = name[5:25]
        return int(digits) if digits.isdigit() and int(digits) > 1 else None
    return None


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
    process that finds it unchanged knows its cached stream versions still hold. `end`
    is an offset in the active segment, the one starting at position `segment`;
    `compactions` moves on whenever a prune rewrote a sealed segment, so readers drop
    what they know of the old files.
    """

    end: int
    next_position: int
    generation: int = 0
    segment: int = 1
    compactions: int = 0


_MARK = struct.Struct("<QQQQQ")
_MARK_V1 = struct.Struct("<QQQ")  # before segments: one feed file


def encode_mark(mark: Mark) -> bytes:
    body = _MARK.pack(*mark)
    return body + zlib.crc32(body).to_bytes(4, "little")


def decode_mark(data: bytes) -> Mark | None:
    for layout in (_MARK, _MARK_V1):
        if len(data) < layout.size + 4:
            continue
        body = data[: layout.size]
        if zlib.crc32(body).to_bytes(4, "little") == data[layout.size : layout.size + 4]:
            return Mark(*layout.unpack(body))
    return None


class Checkpoint(NamedTuple):
    boot_id: str
    end: int
    next_position: int
    segment: int = 1


def read_checkpoint(path: Path) -> Checkpoint | None:
    try:
        raw = json.loads(path.read_bytes())
        return Checkpoint(
            str(raw["boot_id"]),
            int(raw["end"]),
            int(raw["next_position"]),
            int(raw.get("segment", 1)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_checkpoint(path: Path, cp: Checkpoint) -> None:
    write_atomic(path, json.dumps(cp._asdict()).encode())
