"""A real uvicorn on 127.0.0.1 serving an ASGI app, and an httpx client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def served(app: ASGIApp, *, within: float = 30, **config: object) -> AsyncIterator[str]:
    """Start uvicorn on a free port (lifespan included), yield its base URL, then shut it
    down. `config`: more `uvicorn.Config` settings."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config)  # type: ignore[arg-type]
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        try:
            with anyio.fail_after(within):
                while not server.started:  # noqa: ASYNC110 - uvicorn has no event to wait on
                    await anyio.sleep(0.01)
            yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        finally:
            server.should_exit = True


@asynccontextmanager
async def served_client(app: ASGIApp, *, within: float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """`served`, with an httpx client of it."""
    async with served(app, within=within) as url, httpx.AsyncClient(base_url=url) as client:
        yield client
