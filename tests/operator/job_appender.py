"""An appender for the operator tests: `python -m tests.operator.job_appender DATA JOBS SEED`.

Appends whole, legal job histories (one append per transition) from several threads, and
prints READY once each thread has appended. Imports only the store, so it starts fast.
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path
from typing import Any

from eventstore import streams
from eventstore.events import JobCompleted, JobProgressed, JobRequested, JobStarted
from eventstore.filelog import FileLog
from eventstore.records import AppendTo, new, uuid7


def append_jobs(data: Path, jobs: int, seed: int, threads: int = 3) -> None:
    """Whole legal histories, one append per transition, from several threads at once.

    Most records are large, so that a SIGKILL often lands mid-write and tears one.
    """
    log = FileLog(data)
    ready = threading.Barrier(threads + 1, timeout=30)

    def work(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        for n in range(k, jobs, threads):
            stream = streams.job(str(uuid7()))
            pad = "x" * rng.choice([10, 70_000, 70_000])
            history: list[Any] = [
                JobRequested(job_type="noop", site_id="site1", user_id="u1", params={"pad": pad}),
                JobStarted(attempt=1, worker_id=f"appender-{seed}"),
                JobProgressed(progress=50, message=pad),
                JobCompleted(result={"n": n}),
            ]
            for version, event in enumerate(history):
                log.append_many([AppendTo(stream, [new(event)], version)])
                if n == k and version == 0:
                    ready.wait()

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    print("READY", flush=True)
    for w in workers:
        w.join()
    log.close()


if __name__ == "__main__":
    append_jobs(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
