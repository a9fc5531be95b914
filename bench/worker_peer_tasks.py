"""The peers' job functions, imported by their workers and by `bench.worker_peer`.

Runs in the peers' own virtualenv (bench/tmp-peers-venv), never in jobtrail's. Huey names
a task by its module and function, so producer and consumer must both import this module
as `bench.worker_peer_tasks`; the Huey instance exists when BENCH_HUEY_DB names its file.

noop   does nothing; returns True so that Huey stores a result (it skips storing None
       by default) and every peer, jobtrail included, records one per job.
stamp  returns time.time() when it starts: the pickup-latency probe.
"""

from __future__ import annotations

import os
import time
from typing import Any

huey: Any = None


def noop() -> bool:
    return True


def stamp() -> float:
    return time.time()


if os.environ.get("BENCH_HUEY_DB"):
    from huey import SqliteHuey  # type: ignore[import-not-found]

    huey = SqliteHuey(filename=os.environ["BENCH_HUEY_DB"])
    huey_noop = huey.task()(noop)
    huey_stamp = huey.task()(stamp)
