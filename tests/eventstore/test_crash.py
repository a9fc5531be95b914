"""The crash loop: SIGKILL appending processes at random instants, then check everything.

After every kill: each acknowledged event is present; no torn record is ever returned;
positions are dense; every multi-stream append landed whole or not at all; `verify`
finds nothing worse than tails set aside. JOBTRAIL_CRASH_ITERATIONS sets the count
(CI runs the default, 200); the seed of a failing iteration is in the assertion.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from eventstore.filelog import FileLog
from eventstore.verify import verify
from tests.eventstore.helpers import spawn, wait_for_line

ITERATIONS = int(os.environ.get("JOBTRAIL_CRASH_ITERATIONS", "200"))
SEED = int(os.environ.get("JOBTRAIL_CRASH_SEED", str(int(time.time()))))
FRESH_EVERY = 25  # a new data directory every so often keeps each check quick


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_instants_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    attempted: dict[str, list[tuple[str, str]]] = {}
    acked: set[tuple[str, str]] = set()
    data = tmp_path / "data0"
    torn_seen = 0
    for i in range(ITERATIONS):
        if i % FRESH_EVERY == 0:
            data = tmp_path / f"data{i}"
            FileLog(data).close()
            attempted.clear()
            acked.clear()
        seed = rng.randrange(1 << 30)
        where = f"iteration {i}, seed {seed} (JOBTRAIL_CRASH_SEED={SEED})"
        procs = [spawn("crash", data, seed + k, rng.choice([1, 2, 4])) for k in range(2)]
        for p in procs:
            wait_for_line(p, "READY")
        time.sleep(rng.uniform(0.0, 0.08))
        procs[0].send_signal(signal.SIGKILL)  # one dies while the other goes on
        time.sleep(rng.uniform(0.0, 0.03))
        procs[1].send_signal(signal.SIGKILL)
        for p in procs:
            out, _ = p.communicate(timeout=30)
            for line in out.splitlines():
                kind, _, rest = line.partition(" ")
                if kind in ("TRY", "ACK") and rest.endswith("]"):
                    ids = [tuple(x) for x in json.loads(rest)]
                    if kind == "TRY":
                        attempted[ids[0][1]] = ids
                    else:
                        acked.update(ids)
                assert kind != "ERR", f"{where}: a child failed to append: {rest}"

        before = verify(data)
        assert before.ok, f"{where}: before recovery {before.findings}"
        torn_seen += sum(f.kind == "torn_tail" for f in before.findings)

        log = FileLog(data)  # a writer: recovers what the dead ones left
        feed = [e for page in log.iter_all() for e in page]
        assert [e.position for e in feed] == list(range(1, len(feed) + 1)), where
        ids_in_feed = {(e.stream, e.id) for e in feed}
        assert len(ids_in_feed) == len(feed), f"{where}: an event id appears twice"
        missing = acked - ids_in_feed
        assert not missing, f"{where}: acknowledged events lost: {sorted(missing)[:3]}"
        for ids in attempted.values():
            present = [x in ids_in_feed for x in ids]
            assert all(present) or not any(present), f"{where}: a partial append {ids}"
        by_stream: dict[str, list[str]] = {}
        for e in feed:
            by_stream.setdefault(e.stream, []).append(e.id)
        for stream in rng.sample(sorted(by_stream), min(20, len(by_stream))):
            assert [e.id for e in log.read_stream(stream)] == by_stream[stream], where
        log.close()
        after = verify(data)
        assert after.ok and all(f.kind == "set_aside" for f in after.findings), (
            f"{where}: after recovery {after.findings}"
        )
    print(f"{ITERATIONS} kills, {torn_seen} torn tails seen before recovery")
