"""`framewalk` finds exactly what `logfile.read_frames` finds, in damaged files too.

`verify` walks every record with `framewalk`; the store's readers use `read_frames`.
Files of random records are cut short, bit-flipped, padded with garbage or given a
record longer than a chunk; both walks must hand on the same payloads and end at the
same place with the same verdict on what follows.
"""

from __future__ import annotations

import os
import random
from functools import partial
from pathlib import Path

import pytest

from eventstore import framewalk, framing
from eventstore.logfile import Tail, read_frames


def _file(rng: random.Random, sizes: list[int]) -> bytes:
    records, seq = [], 1
    for _ in range(rng.randint(0, 10)):
        count = rng.randint(1, 3)
        records.append(framing.frame(seq, count, rng.randbytes(rng.choice(sizes))))
        seq += count
    data = bytearray(framing.file_header(framing.KIND_STREAM) + b"".join(records))
    damage = rng.random()
    if damage < 0.25 and len(data) > 8:  # a bit flip anywhere after the file header
        data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
    elif damage < 0.5:  # a torn tail
        data = data[: rng.randint(8, len(data))]
    elif damage < 0.6:  # garbage after the records
        data += rng.randbytes(rng.randint(1, 40))
    elif damage < 0.7 and len(records) > 1:  # a record lost: the ones after do not chain
        i = rng.randrange(len(records) - 1)
        data = bytearray(framing.file_header(1) + b"".join(records[:i] + records[i + 1 :]))
    return bytes(data)


def _collect(into: list[bytes], payloads: list[bytes | bytearray]) -> None:
    into.extend(map(bytes, payloads))


@pytest.mark.parametrize(("chunk", "sizes"), [(64, list(range(0, 120))), (4096, [0, 9, 5000])])
def test_framewalk_finds_what_read_frames_finds(
    tmp_path: Path, chunk: int, sizes: list[int]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "log"
    for _ in range(200):
        path.write_bytes(_file(rng, sizes))
        fd = os.open(path, os.O_RDONLY)
        try:
            want_tail = Tail(0, 1, 0)
            want = [bytes(f.payload) for f in read_frames(fd, 8, 1, want_tail, look_past=True)]
            got: list[bytes] = []
            got_tail = Tail(0, 1, 0)
            framewalk.walk(
                fd,
                8,
                1,
                got_tail,
                partial(_collect, got),
                look_past=True,
                chunk=chunk,
            )
        finally:
            os.close(fd)
        assert (got, got_tail) == (want, want_tail), f"seed {seed}"


def test_chain_stops_at_the_first_record_that_is_not_valid() -> None:
    records = [framing.frame(1, 2, b"a"), framing.frame(3, 1, b"bc"), framing.frame(4, 1, b"d")]
    data = b"".join(records)
    payloads, end, seq = framewalk.chain(data, 0, len(data), 1)
    assert (payloads, end, seq) == ([b"a", b"bc", b"d"], len(data), 5)
    flipped = bytearray(data)
    flipped[len(records[0]) + 25] ^= 1  # the second record's payload
    assert framewalk.chain(flipped, 0, len(data), 1) == ([b"a"], len(records[0]), 3)
    assert framewalk.chain(data, 0, len(data) - 1, 1) == ([b"a", b"bc"], len(data) - 25, 4)
    assert framewalk.chain(data, 0, len(data), 2) == ([], 0, 2)  # not the seq expected
