"""The two servers the HTTP benchmark compares, each run as `python -m bench.http_servers`.

`bare`: a Starlette app answering the same shapes with no work behind them (the
baseline). `jobtrail`: the real service over a file store. Both run under uvicorn with
the same settings: one process, uvloop and httptools as `uvicorn[standard]` picks them,
no access log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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


def main(kind: str, port: int, data: str) -> None:
    config = {"host": "127.0.0.1", "port": port, "log_level": "warning", "access_log": False}
    if kind == "bare":
        uvicorn.run(bare_app(), **config)  # type: ignore[arg-type]
        return
    import os

    os.environ["JOBTRAIL_DATA"] = data
    os.environ["JOBTRAIL_SECRET"] = SECRET
    os.environ["JOBTRAIL_HANDLERS"] = "bench.http_handlers"
    from service.serve import serve_app

    uvicorn.run(serve_app(), **config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else str(Path(".")))
