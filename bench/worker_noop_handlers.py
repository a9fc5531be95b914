"""The worker benchmark's job type: `jobtrail worker --handlers bench/worker_noop_handlers.py`.

`noop` does nothing and returns nothing, like the peers' no-op tasks, so what is measured
is the queue: pickup, claim, and recording the outcome durably.
"""

from __future__ import annotations

from typing import Any

from worker import Handlers, JobContext

handlers = Handlers()


@handlers.job("noop")
async def noop(ctx: JobContext, params: dict[str, Any]) -> None:
    return None
