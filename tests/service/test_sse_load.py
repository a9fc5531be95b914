"""A thousand live streams on one server: every one gets the event, none holds up the rest."""

from __future__ import annotations

import anyio
import httpx
import pytest

from eventstore.events import JobStarted
from tests.service.conftest import Service
from tests.service.test_events_api import SSE, SseReader, append, requested

pytestmark = pytest.mark.anyio

STREAMS = 1000
CONNECT_SECONDS = 45  # opening 1,000 connections on 2 cores, client and server in one loop
DELIVERY_SECONDS = 10


@pytest.mark.slow
@pytest.mark.parametrize("route", ["feed", "job"])
async def test_a_thousand_streams_each_receive_the_event(service: Service, route: str) -> None:
    job_id = await requested(service)
    url = "/api/events" if route == "feed" else f"/api/jobs/{job_id}/events"
    headers = {**SSE, **service.auth(user="root", role="admin")}
    limits = httpx.Limits(max_connections=STREAMS + 100, max_keepalive_connections=STREAMS + 100)
    subscribed = 0
    all_subscribed = anyio.Event()
    delivered: list[float] = []

    async def listen(client: httpx.AsyncClient) -> None:
        nonlocal subscribed
        async with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            reader = SseReader(response)
            first = await reader.next()
            assert first is not None and first.retry == 3000
            if route == "job":
                (requested_frame,) = await reader.events(1)
                assert requested_frame.event == "requested"
            subscribed += 1
            if subscribed == STREAMS:
                all_subscribed.set()
            (frame,) = await reader.events(1)
            assert frame.event == "started" and frame.data["job_id"] == job_id
            delivered.append(anyio.current_time())

    base = str(service.client.base_url)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async with anyio.create_task_group() as tg:
            opened = anyio.current_time()
            for _ in range(STREAMS):
                tg.start_soon(listen, client)
            with anyio.fail_after(CONNECT_SECONDS):
                await all_subscribed.wait()
            connected = anyio.current_time()
            await append(service, job_id, JobStarted(attempt=1))
            appended = anyio.current_time()
            with anyio.fail_after(DELIVERY_SECONDS):
                while len(delivered) < STREAMS:  # noqa: ASYNC110 - the listeners count themselves
                    await anyio.sleep(0.01)
    latest = max(delivered) - appended
    print(
        f"\n{route}: {STREAMS} streams open in {connected - opened:.1f}s,"
        f" all had the event {latest:.2f}s after the append"
    )
    assert len(delivered) == STREAMS
