"""The stream logs read by two processes at once, for `verify`.

`verify` walks the feed in its own process while a second one (`python -m
eventstore.shared_logs DATA DIR`) reads the stream logs (`verify_logs`). Neither half takes
a known time, so they share the logs out by shard directory (`ShardClaims`): the second
process takes shards from the first up; `verify`, once its walk is done, from the last
down, until they meet. The second process appends each shard's logs to a parts file as
soon as it has read them (`write_parts`), and `verify` takes them in between its own
shards (`SharedRead`), so that little is left for the end. Whatever the second process
took and did not hand on (it died, hung, or wrote something unreadable) `verify` reads
itself once that process is gone, so the logs are always all read, once each.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import msgspec

from eventstore.layout import Layout
from eventstore.shard_claims import ClaimsStuck, ShardClaims
from eventstore.verify_logs import LogsSeen, Shards

log = logging.getLogger("jobtrail.store")

CLAIM_SECONDS: Final = 5.0
"""How long `verify` waits for the claims' lock (held for microseconds at a time) before
it ends a second process that holds it and does not let go (stopped, or hung)."""

LAST_SHARD_SECONDS: Final = 30.0
"""How long the second process may take, once `verify` has taken the last shard, to hand
on what it took; it is then ended and `verify` reads those shards itself."""


class ShardPart(msgspec.Struct, array_like=True):
    """One shard's logs, as the second process hands them on."""

    index: int
    logs: LogsSeen


_LENGTH: Final = struct.Struct("<I")
_PART: Final = msgspec.msgpack.Decoder(ShardPart)


def write_parts(layout: Layout, claims: ShardClaims, fd: int) -> int:
    """Read the shards taken from the first up, appending each one's logs to `fd` as soon
    as they are read; how many were written. ShardsChanged, before taking any, if this
    process lists other shards than those the claims were made for."""
    shards = Shards(layout)
    claims.check(shards.names)
    written = 0
    while (index := claims.take()) is not None:
        write_part(fd, ShardPart(index, shards.read(index)))
        written += 1
    return written


def write_part(fd: int, part: ShardPart) -> None:
    """Append one part: its length, then the part."""
    data = msgspec.msgpack.encode(part)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class PartsReader:
    """The parts another process appends to a file (`write_parts`), read as they come."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = 0

    def new(self) -> list[ShardPart]:
        """The whole parts appended since the last call; DecodeError for one that is not
        a part."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size - self._offset, self._offset) if size > self._offset else b""
        parts: list[ShardPart] = []
        off = 0
        while len(data) - off >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(data, off)
            end = off + _LENGTH.size + length
            if end > len(data):
                break  # still being written
            parts.append(_PART.decode(data[off + _LENGTH.size : end]))
            off = end
        self._offset += off
        return parts

    def close(self) -> None:
        os.close(self._fd)


class Helper(Protocol):
    """The second process, as `SharedRead` handles it."""

    def result(self, timeout: float | None = None) -> object | None:
        """Wait for it to answer (None if it failed, or was ended after `timeout`)."""
        ...

    def stop(self) -> None:
        """End it now."""
        ...


class SharedRead:
    """`verify`'s half: the claims and parts files in `directory` (private, made by the
    caller), then every log, from the second process's parts and this process's shards.

    The second process is `python -m eventstore.shared_logs DATA DIRECTORY`.
    """

    def __init__(self, layout: Layout, directory: str) -> None:
        self._shards = Shards(layout)  # OSError if `streams/` cannot be listed
        self._claims = ShardClaims(f"{directory}/claims", self._shards.names)
        try:
            os.close(os.open(f"{directory}/parts", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self._parts = PartsReader(f"{directory}/parts")
        except BaseException:
            self._claims.close()
            raise
        self._theirs = LogsSeen()
        self._taken = 0  # their parts taken in: shards 0, 1, 2...
        self._trusted = True  # until a part is unreadable or out of order

    def read(self, helper: Helper) -> LogsSeen:
        """Every log, in shard order. (A second process that lists other shards than this
        one fails before it takes any, and this one reads them all.) ClaimsStuck if the
        claims' lock stays held after the second process was ended."""
        mine = []
        while (index := self._take(helper)) is not None:
            mine.append((index, self._shards.read(index)))
            self._take_in(helper)
        self._take_in(helper)
        try:
            below = self._claims.taken_from_below(within=CLAIM_SECONDS)
        except ClaimsStuck:
            self._end_holder(helper)
            below = self._claims.taken_from_below(within=CLAIM_SECONDS)
        if self._taken != below:  # it has some still to hand on
            if self._trusted:
                helper.result(timeout=LAST_SHARD_SECONDS)
            helper.stop()
            self._take_in(helper)
            missing = range(self._taken, self._claims.taken_from_below(within=CLAIM_SECONDS))
            for index in missing:
                self._theirs.extend(self._shards.read(index))
        for _, logs in reversed(mine):
            self._theirs.extend(logs)
        return self._theirs

    def _take(self, helper: Helper) -> int | None:
        """The next shard from the last down, or None when all are taken. A second process
        that holds the claims' lock for CLAIM_SECONDS is ended (its lock goes with it)."""
        try:
            return self._claims.take(from_top=True, within=CLAIM_SECONDS)
        except ClaimsStuck:
            self._end_holder(helper)
            return self._claims.take(from_top=True, within=CLAIM_SECONDS)

    def _end_holder(self, helper: Helper) -> None:
        """End the second process: it held the claims' lock and did not let go. Raises
        ClaimsStuck (an OSError: `verify` then checks the plain way) if the lock stays held."""
        log.warning(
            "verify: the second process held the shard claims for %g s; ending it and "
            "reading its shards in this one",
            CLAIM_SECONDS,
        )
        helper.stop()

    def _take_in(self, helper: Helper) -> None:
        """Join the parts handed on since; after one that is not right, trust none."""
        if not self._trusted:
            return
        try:
            parts = self._parts.new()
        except msgspec.DecodeError:
            parts = []
            self._trusted = False
        for part in parts:
            if part.index != self._taken:
                self._trusted = False
                break
            self._theirs.extend(part.logs)
            self._taken += 1
        if not self._trusted:
            log.warning(
                "verify: the second process handed on a part that is not right; "
                "reading its shards in this one"
            )
            helper.stop()

    def close(self) -> None:
        self._parts.close()
        self._claims.close()


def main(argv: Sequence[str]) -> int:
    """`python -m eventstore.shared_logs DATA DIRECTORY`: read the shards taken from the first
    up of the claims in DIRECTORY, appending each one's logs to its parts file; then how
    many parts were written, as msgpack on standard output."""
    claims = ShardClaims(f"{argv[1]}/claims")
    fd = os.open(f"{argv[1]}/parts", os.O_WRONLY | os.O_APPEND)
    try:
        written = write_parts(Layout(Path(argv[0])), claims, fd)
    finally:
        os.close(fd)
        claims.close()
    sys.stdout.buffer.write(msgspec.msgpack.encode(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
