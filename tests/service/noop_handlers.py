"""A handlers module for tests that start `jobtrail serve` with --handlers / JOBTRAIL_HANDLERS."""

from __future__ import annotations

from typing import Any

from worker import Handlers, JobContext

handlers = Handlers()


@handlers.job("noop")
async def noop(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}
