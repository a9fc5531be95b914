"""The servers the HTTP benchmark compares, each run as `python -m bench.http_servers`.

`bare`: a Starlette app answering the same shapes with no work behind them (the
baseline). `jobtrail`: the real service over a file store. `floor`: no framework and no
service at all, only what any service over the file store must do per creation (decode
the body, append a new job's `requested`, answer after the fsync): the most creations
per second a service over this store could make. All run under uvicorn with the same
settings: one process, uvloop and httptools as `uvicorn[standard]` picks them, no
access log.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from eventstore import NO_STREAM, AppendTo, new, streams
from eventstore.events import JobRequested
from eventstore.filestore import FileStore, open_file_store
from eventstore.records import uuid7

SECRET = "bench-secret-of-at-least-32-bytes-0123456789"
_JSON = msgspec.json.Encoder()


def bare_app() -> Starlette:
    async def create(request: Request) -> Response:
        body = msgspec.json.decode(await request.body())
        answer = {"status": "accepted", "job_id": "0" * 36, "type": body.get("type")}
        return Response(_JSON.encode(answer), 202, media_type="application/json")

    async def poll(request: Request) -> Response:
        answer = {"job_id": request.path_params["job_id"], "status": "pending"}
        return Response(_JSON.encode(answer), 200, media_type="application/json")

    return Starlette(
        routes=[
            Route("/api/jobs", create, methods=["POST"]),
            Route("/api/jobs/{job_id}", poll, methods=["GET"]),
        ]
    )


class StoreFloor:
    """A raw ASGI app whose POST does only the store's part of a creation, committed as
    `serve` commits (a commit process): an upper bound for any service over the file store
    on this machine (no routing, no token, no read model, no metrics), measured beside the
    service in the same run."""

    def __init__(self, data: Path) -> None:
        self._data = data
        self._store: FileStore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] != "POST":
            await _answer(send, 404, {"error": "NotFound"})
            return
        job_type = msgspec.json.decode(body).get("type", "noop")
        job_id = str(uuid7())
        event = JobRequested(job_type=job_type, site_id="bench", user_id="admin1")
        assert self._store is not None, "the lifespan opens the store before any request"
        await self._store.append_many([AppendTo(streams.job(job_id), [new(event)], NO_STREAM)])
        await _answer(send, 202, {"status": "accepted", "job_id": job_id})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with AsyncExitStack() as stack:
            await receive()  # lifespan.startup
            self._store = await stack.enter_async_context(
                open_file_store(self._data, create=True, commit_process=True)
            )
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


async def _answer(send: Send, status: int, answer: dict[str, Any]) -> None:
    body = _JSON.encode(answer)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(kind: str, port: int, data: str) -> None:
    config = {"host": "127.0.0.1", "port": port, "log_level": "warning", "access_log": False}
    if kind == "bare":
        uvicorn.run(bare_app(), **config)  # type: ignore[arg-type]
        return
    if kind == "floor":
        uvicorn.run(StoreFloor(Path(data)), **config)  # type: ignore[arg-type]
        return
    import os

    os.environ["JOBTRAIL_DATA"] = data
    os.environ["JOBTRAIL_SECRET"] = SECRET
    os.environ["JOBTRAIL_HANDLERS"] = "bench.http_handlers"
    from service.serve import serve_app

    uvicorn.run(serve_app(), **config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else str(Path(".")))
