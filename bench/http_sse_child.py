"""A process holding many SSE connections to /api/events: `python -m bench.http_sse_child`.

Arguments: port, token, connections, seconds. It prints `READY` once every stream is
open, then, when its time is up, one JSON line: for each job id seen, the
`time.monotonic()` of each arrival (one per connection). Raw asyncio streams keep the
client's own cost per event small, so the figure is the server's, not the client's.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import msgspec

_KEY = b'"job_id":"'


async def _one(
    port: int,
    token: str,
    seen: dict[str, list[float]],
    ready: asyncio.Event,
    opened: list[int],
    total: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"retry:"):
            opened[0] += 1
            if opened[0] == total:
                ready.set()
        elif line.startswith(b"data:"):
            at = time.monotonic()
            i = line.find(_KEY)
            if i >= 0:
                job_id = line[i + len(_KEY) : i + len(_KEY) + 36].decode()
                seen.setdefault(job_id, []).append(at)


async def main(port: int, token: str, connections: int, seconds: float) -> None:
    seen: dict[str, list[float]] = {}
    ready = asyncio.Event()
    opened = [0]
    tasks = [
        asyncio.create_task(_one(port, token, seen, ready, opened, connections))
        for _ in range(connections)
    ]
    await asyncio.wait_for(ready.wait(), 60)
    print("READY", flush=True)
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sys.stdout.write(msgspec.json.encode(seen).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    signal.alarm(300)  # never outlive a lost parent by much
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
