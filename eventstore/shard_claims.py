"""The shard directories two processes share out while they read the stream logs.

`verify` has a second process read the stream logs while it walks the feed. Neither half
takes a fixed time, so whichever finishes first helps with what is left instead of
waiting: the second process takes shards from the first up, the main one (its feed walk
done) from the last down, one at a time, until they meet. Three counters in a small file
of a private temporary directory say how far each end has got and how many shards there
are; they change only under `flock` on that file.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Final

_COUNTERS: Final = struct.Struct("<III")
"""The next shard from below, one past the next from above, and how many there are."""


class ShardsChanged(Exception):
    """The process that opened the claims lists another number of shard directories."""


class ShardClaims:
    """One process's handle on the shared claims (see the module's docstring)."""

    def __init__(self, path: str, shards: int | None = None) -> None:
        """Open the claims at `path`; with `shards`, create them, none taken yet."""
        create = shards is not None
        self._fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        if shards is not None:
            os.pwrite(self._fd, _COUNTERS.pack(0, shards, shards), 0)
        self.shards: int = self._read()[2]

    def take(self, *, from_top: bool = False) -> int | None:
        """The index of the next shard from this end, now this process's; None when all
        are taken."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            low, high, shards = self._read()
            if low >= high:
                return None
            if from_top:
                high -= 1
                taken = high
            else:
                taken = low
                low += 1
            os.pwrite(self._fd, _COUNTERS.pack(low, high, shards), 0)
            return taken
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def taken_from_below(self) -> int:
        """How many shards have been taken from the first up."""
        return self._read()[0]

    def _read(self) -> tuple[int, int, int]:
        low, high, shards = _COUNTERS.unpack(os.pread(self._fd, _COUNTERS.size, 0))
        return low, high, shards

    def close(self) -> None:
        os.close(self._fd)
