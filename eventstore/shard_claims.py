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
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

_COUNTERS: Final = struct.Struct("<IIII")
"""The next shard from below, one past the next from above, how many there are, and the
CRC-32 of their names (so that both processes number the same shards alike)."""


class ShardsChanged(Exception):
    """This process lists other shard directories than the one that made the claims."""


class ClaimsStuck(OSError):
    """The other process holds the claims' lock and does not let go (it is stopped, or
    hangs): ending it releases the lock."""


class ShardClaims:
    """One process's handle on the shared claims (see the module's docstring)."""

    def __init__(self, path: str, names: Sequence[str] | None = None) -> None:
        """Open the claims at `path`; with the shard directories' `names`, create them,
        none taken yet."""
        create = names is not None
        self._fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        if names is not None:
            os.pwrite(self._fd, _COUNTERS.pack(0, len(names), len(names), _listing(names)), 0)
        self.shards: int = self._read()[2]

    def check(self, names: Sequence[str]) -> None:
        """ShardsChanged unless `names` are the shards the claims were made for."""
        if (len(names), _listing(names)) != self._read()[2:]:
            raise ShardsChanged(f"{len(names)} shard directories listed, not those claimed")

    def take(self, *, from_top: bool = False, within: float | None = None) -> int | None:
        """The index of the next shard from this end, now this process's; None when all
        are taken. ClaimsStuck if the lock is not had within `within` seconds."""
        with self._locked(within):
            low, high, shards, listing = self._read()
            if low >= high:
                return None
            if from_top:
                high -= 1
                taken = high
            else:
                taken = low
                low += 1
            os.pwrite(self._fd, _COUNTERS.pack(low, high, shards, listing), 0)
            return taken

    def taken_from_below(self, *, within: float | None = None) -> int:
        """How many shards have been taken from the first up (ClaimsStuck as `take`)."""
        with self._locked(within):
            return self._read()[0]

    @contextmanager
    def _locked(self, within: float | None) -> Iterator[None]:
        """The claims' lock. It is held for microseconds; a process stopped while holding
        it would hold it for ever, so a caller that cannot wait for ever says how long."""
        if within is None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + within
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ClaimsStuck(f"the claims were locked for {within:g} s") from None
                    time.sleep(0.001)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self) -> tuple[int, int, int, int]:
        low, high, shards, listing = _COUNTERS.unpack(os.pread(self._fd, _COUNTERS.size, 0))
        return low, high, shards, listing

    def close(self) -> None:
        os.close(self._fd)


def _listing(names: Sequence[str]) -> int:
    return zlib.crc32("/".join(names).encode())
