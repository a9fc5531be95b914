"""A subscriber too slow to keep up is dropped, and its resume loses and repeats nothing.

Through a real uvicorn: a client that stops reading fills its socket, then the hub's
queue; the hub ends its stream (rather than wait or grow), the client drains what was
sent, reconnects with `Last-Event-ID`, and has every event once, in order.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import anyio
import pytest

from eventstore.events import JobProgressed, JobStarted
from service.fanout import BUFFER
from tests.service.test_events_api import append, ids, requested, served, sse

pytestmark = pytest.mark.anyio

FILLER = "x" * 4000  # big events fill the socket buffers in a few thousand events
BATCH = 250
MAX_EVENTS = 12_000  # the bound of the load loop (about 48 MB of frames)
LIMIT = 60


async def _stalled_stream(
    port: int, path: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream whose client reads nothing yet, with a small receive buffer. (Keep the
    writer: a collected StreamWriter closes the connection.)"""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


def _event_ids(raw: bytes) -> list[int]:
    """The `id:` of every event in a raw chunked SSE response."""
    return [int(line[4:]) for line in raw.split(b"\n") if line.startswith(b"id: ")]


@pytest.mark.slow
async def test_a_dropped_subscriber_resumes_with_every_event_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "jobtrail.fanout")
    async with served(tmp_path) as (svc, hub):
        job_id = await requested(svc)
        await append(svc, job_id, JobStarted(attempt=1))
        port = int(str(svc.client.base_url).rsplit(":", 1)[1])
        path = f"/api/jobs/{job_id}/events"
        with anyio.fail_after(LIMIT):
            stalled, connection = await _stalled_stream(port, path, svc.token())
            while hub.subscribers == 0:  # noqa: ASYNC110 - the request is on its way
                await anyio.sleep(0.01)
            appended = 2
            while hub.subscribers and appended < MAX_EVENTS:  # until the hub drops it
                progress = [JobProgressed(progress=1, message=FILLER) for _ in range(BATCH)]
                await append(svc, job_id, *progress)
                appended += BATCH
                await anyio.sleep(0.01)  # let the hub publish and the writer block
            assert hub.subscribers == 0, f"never dropped after {appended} events"
            first = _event_ids(await stalled.read())  # what was sent, then the end
            connection.close()
        dropped = f"dropped a live event stream {BUFFER} events behind"
        assert dropped in caplog.messages  # the hub ended it: no disconnect, no error
        assert first == list(range(1, len(first) + 1)) and len(first) < appended
        with anyio.fail_after(LIMIT):
            async with sse(svc, path, svc.auth(), str(first[-1])) as (_, reader):
                resumed = await reader.events(appended - len(first))
        assert first + ids(resumed) == list(range(1, appended + 1))
