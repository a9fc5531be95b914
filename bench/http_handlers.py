"""The job type the HTTP benchmark creates: a no-op."""

from __future__ import annotations

from typing import Any

from worker import Handlers, JobContext

handlers = Handlers()


@handlers.job("noop")
async def noop(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return {}
