"""The chunked reader against a plain reference parse, at every awkward size."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from eventstore import framing, logfile
from eventstore.logfile import Tail, read_frames


@pytest.mark.parametrize(
    ("chunk", "sizes"),
    [
        (64, list(range(0, 200))),
        (1 << 20, [0, 1, 1000, (1 << 20) - 25, (1 << 20) - 24, 1 << 20, (1 << 20) + 1, 3 << 20]),
    ],
)
def test_read_frames_yields_exactly_the_whole_valid_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, sizes: list[int]
) -> None:
    monkeypatch.setattr(logfile, "CHUNK", chunk)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "log"
    for _ in range(300 if chunk < 1000 else 12):
        records, seq = [], 1
        for _ in range(rng.randint(0, 8)):
            count = rng.randint(1, 3)
            records.append(framing.frame(seq, count, bytes([seq % 251]) * rng.choice(sizes)))
            seq += count
        data = b"".join(records)
        cut = rng.choice([len(data), rng.randint(0, len(data))]) if data else 0
        tail_garbage = rng.randbytes(rng.randint(1, 30)) if rng.random() < 0.2 else b""
        path.write_bytes(data[:cut] + tail_garbage)
        expected, off, next_seq = [], 0, 1
        for r in records:
            if off + len(r) > cut:
                break
            expected.append((off, next_seq))
            next_seq += int.from_bytes(r[16:20], "little")
            off += len(r)
        fd = os.open(path, os.O_RDONLY)
        try:
            tail = Tail(0, 1, 0)
            got = [(f.offset, f.seq) for f in read_frames(fd, 0, 1, tail, look_past=True)]
        finally:
            os.close(fd)
        assert got == expected, f"seed {seed}"
        assert (tail.end, tail.next_seq, tail.damaged) == (off, next_seq, False), f"seed {seed}"
