"""Running the service under uvicorn, in one process or several on one data directory.

`serve_app()` is the ASGI app uvicorn imports (also in each `--workers` process): its
lifespan opens the file store from the JOBTRAIL_* settings, then runs `create_app`'s own
lifespan inside, so the store outlives every request and closes last.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Final

import anyio
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from eventstore.filestore import open_file_store
from service.app import create_app
from service.operator.prune import prune_periodically
from service.settings import from_env, with_handlers
from worker.assemble import open_worker
from worker.metrics import WorkerMetrics


class ServedApp:
    """An ASGI app whose lifespan opens the store, then the service over it.

    With `worker_concurrency` (`jobtrail up`), a worker runs in the same process and
    event loop, on the same store, until the server shuts down.
    """

    def __init__(self, worker_concurrency: int | None = None) -> None:
        self._inner: Starlette | None = None
        self._worker_concurrency = worker_concurrency

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        settings = with_handlers(from_env())
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                open_file_store(settings.data, create=True, commit_process=True)
            )
            inner = create_app(store, settings)
            await stack.enter_async_context(inner.router.lifespan_context(inner))
            if self._worker_concurrency is not None:
                metrics = WorkerMetrics(inner.state.jobtrail.metrics.registry)
                worker = await stack.enter_async_context(
                    open_worker(
                        store, settings, concurrency=self._worker_concurrency, metrics=metrics
                    )
                )
                tasks = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tasks.cancel_scope.cancel)  # runs before the group is left
                await tasks.start(worker.run)
                if settings.retention_seconds is not None:
                    retention = timedelta(seconds=settings.retention_seconds)
                    tasks.start_soon(prune_periodically, store, retention)
            self._inner = inner
            try:
                yield
            finally:
                self._inner = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        assert self._inner is not None, "the lifespan opens the store before any request"
        await self._inner(scope, receive, send)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        started = False
        try:
            async with self._lifespan():
                _settle_heap()
                await send({"type": "lifespan.startup.complete"})
                started = True
                message = await receive()
        except Exception as exc:
            kind = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": kind, "message": repr(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


GC_YOUNG_THRESHOLD: Final = 50_000
"""Allocations between young collections (CPython's default is 700). With a thousand
open streams a young pass cost 2-4 ms and the collector took about a third of the
server's CPU; measured in docs/performance.md (HTTP service)."""


def _settle_heap() -> None:
    """Move what startup built (modules, the read model, the OpenAPI document) out of the
    collector's sight, and collect the young generation less often: full collections
    then walk only what came since, and a server with many streams stops pausing for
    tens of milliseconds at a time (measured: 50 to 250 ms under load)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def serve_app() -> ServedApp:
    """The factory uvicorn calls (`--factory`) in every worker process."""
    return ServedApp()
