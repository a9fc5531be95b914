"""A process holding many SSE subscribers of /api/events: `python -m bench.http_sse_child`.

Arguments: port, token, subscribers. It prints `READY` once every stream is open, then
waits for a line `STOP <events> <grace seconds>` on its standard input: from then on it
waits until every subscriber has received `events` events, or the grace time passes, and
prints one JSON line (`Report`). A stream the server ends is reopened with
`Last-Event-ID`, as a browser does (`Connection: close` makes an ended stream a closed
socket), so an event is lost only if no reconnect brings it; repeated or out-of-order
ids are counted apart, never hidden in the totals.
Connections are plain asyncio protocols on uvloop (when installed), so the client's own
cost per event stays small next to the server's.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Final, cast

import msgspec

_KEY: Final = b'"job_id":"'
_UUID_LEN: Final = 36


class Report(msgspec.Struct):
    """What one child saw; `seen` maps a job id to each subscriber's arrival time."""

    seen: dict[str, list[float]]
    reconnects: int = 0
    repeated: int = 0  # an id not above the last one: a repeat or out of order
    foreign: int = 0  # an event without a job id (not one of the benchmark's)
    failed_reconnects: int = 0


class Subscriber(asyncio.Protocol):
    """One logical subscriber: a stream, reopened after `Last-Event-ID` when it ends."""

    def __init__(self, port: int, token: str, report: Report, opened: asyncio.Event) -> None:
        self.port = port
        self.token = token
        self.report = report
        self.opened = opened
        self.last_id: int | None = None
        self.received = 0
        self.ended: asyncio.Future[None] | None = None
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    # -- connecting ----------------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.ended = loop.create_future()
        self._buffer = b""
        await loop.create_connection(lambda: self, "127.0.0.1", self.port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        resume = "" if self.last_id is None else f"Last-Event-ID: {self.last_id}\r\n"
        self._transport.write(
            f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Connection: close\r\nAuthorization: Bearer {self.token}\r\n{resume}\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        buffer = self._buffer + data
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            self._frame(buffer[start:end], at)
            start = end + 2
        self._buffer = buffer[start:]

    def _frame(self, frame: bytes, at: float) -> None:
        """One SSE message (possibly after a chunk-size line of the HTTP framing)."""
        if b"retry:" in frame:
            self.opened.set()
        i = frame.find(b"\nid: ")  # the chunk's size line comes first; never a header's
        if i < 0:
            return
        event_id = int(frame[i + 5 : frame.index(b"\n", i + 1)])
        if self.last_id is not None and event_id <= self.last_id:
            self.report.repeated += 1
            return
        k = frame.find(_KEY)
        if k < 0:
            self.report.foreign += 1
            return
        job_id = frame[k + len(_KEY) : k + len(_KEY) + _UUID_LEN].decode()
        self.report.seen.setdefault(job_id, []).append(at)
        self.last_id = event_id
        self.received += 1

    async def run(self) -> None:
        """Keep the stream open, reconnecting with `Last-Event-ID` whenever it ends."""
        while True:
            assert self.ended is not None
            await self.ended
            self.report.reconnects += 1
            try:
                await self.connect()
            except OSError:
                self.report.failed_reconnects += 1
                await asyncio.sleep(0.1)
                self.ended = asyncio.get_running_loop().create_future()
                self.ended.set_result(None)


async def main(port: int, token: str, count: int) -> None:
    report = Report(seen={})
    subscribers = []
    for _ in range(count):
        opened = asyncio.Event()
        sub = Subscriber(port, token, report, opened)
        await sub.connect()
        subscribers.append((sub, opened))
    await asyncio.wait_for(asyncio.gather(*(opened.wait() for _, opened in subscribers)), 60)
    keepers = [asyncio.create_task(sub.run()) for sub, _ in subscribers]
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    _, events_text, grace_text = line.split()
    events, deadline = int(events_text), time.monotonic() + float(grace_text)
    waiting = [sub for sub, _ in subscribers]
    while waiting and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded; protocols count
        await asyncio.sleep(0.05)
        waiting = [sub for sub in waiting if sub.received < events]
    for task in keepers:
        task.cancel()
    for sub, _ in subscribers:
        sub.close()
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    sys.stdout.flush()


def _run(port: int, token: str, count: int) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(port, token, count))
        return
    uvloop.run(main(port, token, count))


if __name__ == "__main__":
    signal.alarm(300)  # never outlive a lost parent by much
    _run(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
