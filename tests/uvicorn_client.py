"""A real uvicorn on 127.0.0.1 serving an ASGI app, and an httpx client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def served_client(app: ASGIApp, *, within: float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """Start uvicorn on a free port (lifespan included), yield a client, then shut it down."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        try:
            with anyio.fail_after(within):
                while not server.started:  # noqa: ASYNC110 - uvicorn has no event to wait on
                    await anyio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
        finally:
            server.should_exit = True
