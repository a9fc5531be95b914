"""Events (API.md section 3) through a real uvicorn: history, job streams, the site feed."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from msgspec.structs import replace

from eventstore import MemoryStore, RecordedEvent, new_event_id
from eventstore.events import (
    Event,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRequested,
    JobRetried,
    JobStarted,
)
from eventstore.filestore import open_file_store
from service import events_api
from service.app import create_app
from service.fanout import FanoutHub
from service.settings import Settings
from tests.service.conftest import SECRET, Service
from tests.uvicorn_client import served_client

pytestmark = pytest.mark.anyio

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SSE = {"Accept": "text/event-stream"}
LIMIT = 10  # seconds any one step may take


# -- helpers -------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE message: an event, a comment, or a `retry:` line."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    retry: int | None = None
    comment: str | None = None


class SseReader:
    """Reads frames off a streaming httpx response; `None` once the server ended it."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, skip_pings: bool = True) -> Frame | None:
        while True:
            frame = await self._frame()
            if frame is None or not (skip_pings and frame.comment is not None):
                return frame

    async def _frame(self) -> Frame | None:
        frame, seen = Frame(), False
        async for line in self._lines:
            if line == "":
                if seen:
                    return frame
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                frame.comment = value
            elif name == "id":
                frame.id = value
            elif name == "event":
                frame.event = value
            elif name == "data":
                frame.data = json.loads(value)
            elif name == "retry":
                frame.retry = int(value)
        return frame if seen else None

    async def events(self, n: int) -> list[Frame]:
        """The next `n` event frames."""
        frames = []
        for _ in range(n):
            frame = await self.next()
            assert frame is not None and frame.data is not None, frame
            frames.append(frame)
        return frames

    async def rest(self) -> list[Frame]:
        """Every frame until the server ends the stream."""
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
        return frames


@asynccontextmanager
async def sse(
    svc: Service | httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    last_event_id: str | None = None,
) -> AsyncIterator[tuple[httpx.Response, SseReader]]:
    """An open stream whose `retry:` line has arrived, so the server has subscribed."""
    client = svc.client if isinstance(svc, Service) else svc
    sent = {**SSE, **headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    async with client.stream("GET", url, headers=sent, timeout=30) as response:
        reader = SseReader(response)
        if response.status_code == 200:
            first = await reader.next()
            assert first is not None and first.retry == 3000, first
        yield response, reader


async def requested(svc: Service, site: str = "site1", user: str = "user1") -> str:
    """A new job of `site` and `user`, appended to the store directly."""
    job_id = new_event_id()
    event = JobRequested(job_type="noop", site_id=site, user_id=user, metadata={"m": 1})
    await svc.store.append(f"job:{job_id}", [event], 0)
    return job_id


async def append(svc: Service, job_id: str, *events: Event) -> list[RecordedEvent]:
    stream = f"job:{job_id}"
    version = await svc.store.stream_version(stream)
    return await svc.store.append(stream, list(events), version)


def ids(frames: list[Frame]) -> list[int]:
    return [int(f.id or "0") for f in frames]


NOW = datetime(2026, 11, 22, 10, 0, 5, 123456, tzinfo=UTC)


# -- history ------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html, */*;q=0.8"])
async def test_history_is_json_field_by_field(service: Service, accept: str | None) -> None:
    job_id = await requested(service)
    await append(service, job_id, JobStarted(attempt=1, worker_id="w1", lease_expires_at=NOW))
    await append(service, job_id, JobProgressed(progress=45, message="half"))
    await append(service, job_id, JobCompleted(result={"ok": True}))
    headers = {**service.auth(), **({"Accept": accept} if accept else {})}
    r = await service.client.get(f"/api/jobs/{job_id}/events", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    events = r.json()["events"]
    assert [e["type"] for e in events] == ["requested", "started", "progressed", "completed"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    stored = await service.store.read_stream(f"job:{job_id}")
    for event, recorded in zip(events, stored, strict=True):
        assert set(event) == {"id", "job_id", "version", "position", "type", "recorded_at", "data"}
        assert event["id"] == recorded.id and event["job_id"] == job_id
        assert event["position"] == recorded.position
        assert TIME.fullmatch(event["recorded_at"])
        assert "type" not in event["data"]
    assert events[0]["data"] == {
        "job_type": "noop",
        "site_id": "site1",
        "user_id": "user1",
        "params": {},
        "metadata": {"m": 1},
        "priority": 0,
        "max_retries": 3,
    }
    assert events[1]["data"] == {
        "attempt": 1,
        "worker_id": "w1",
        "lease_expires_at": "2026-11-22T10:00:05.123Z",
    }
    assert events[2]["data"] == {"progress": 45, "message": "half"}
    assert events[3]["data"] == {"result": {"ok": True}}


async def test_history_of_a_job_created_over_http(service: Service) -> None:
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=service.auth())
    events_url = r.json()["events_url"]
    history = await service.client.get(events_url, headers=service.auth())
    (event,) = history.json()["events"]
    assert event["type"] == "requested" and event["job_id"] == r.json()["job_id"]


async def test_who_may_see_a_history(service: Service) -> None:
    mine = await requested(service, user="alice")
    theirs = await requested(service, user="bob")
    elsewhere = await requested(service, site="site2", user="alice")
    get = service.client.get
    alice = service.auth(user="alice")
    admin = service.auth(user="root", role="admin")
    assert (await get(f"/api/jobs/{mine}/events", headers=alice)).status_code == 200
    assert (await get(f"/api/jobs/{theirs}/events", headers=admin)).status_code == 200
    for job_id, headers in [(theirs, alice), (elsewhere, admin), (str(uuid.uuid4()), admin)]:
        for accept in ({}, SSE):
            r = await get(f"/api/jobs/{job_id}/events", headers={**headers, **accept})
            assert r.status_code == 404 and r.json()["error"] == "JobNotFound"
            assert r.json()["path"] == f"/api/jobs/{job_id}/events"
    upper = await get(f"/api/jobs/{mine.upper()}/events", headers=alice)
    assert upper.status_code == 200


async def test_errors_come_in_the_api_order(service: Service) -> None:
    job_id = await requested(service)
    get = service.client.get
    r = await get(f"/api/jobs/{job_id}/events")
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    r = await get("/api/jobs/not-a-uuid/events")
    assert r.status_code == 401  # authentication comes before the id
    r = await get("/api/jobs/not-a-uuid/events", headers=service.auth())
    assert r.status_code == 400 and r.json()["error"] == "InvalidId"
    r = await get(f"/api/jobs/{job_id}/events", headers={**service.auth(), "X-Site-Id": "site2"})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    r = await get("/api/events", headers={**service.auth(), "X-User-Id": "someone"})
    assert r.status_code == 403
    r = await get("/api/events", headers={**SSE, "Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await service.client.post(f"/api/jobs/{job_id}/events", headers=service.auth())
    assert r.status_code == 405


async def test_streams_take_the_token_as_access_token(service: Service) -> None:
    job_id = await requested(service)
    token = service.token()
    url = f"/api/jobs/{job_id}/events?access_token={token}"
    async with sse(service, url, {}) as (r, reader):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        (frame,) = await reader.events(1)
        assert frame.event == "requested"
    async with sse(service, f"/api/events?access_token={token}", {}) as (r, _):
        assert r.status_code == 200
    # the header wins when both are given
    bad = {"Authorization": "Bearer nope"}
    async with sse(service, url, bad) as (r, _):
        assert r.status_code == 401
    async with sse(service, "/api/events?access_token=nope", service.auth()) as (r, _):
        assert r.status_code == 200
    # the same route answered as JSON takes it too
    r = await service.client.get(url)
    assert r.status_code == 200 and len(r.json()["events"]) == 1


# -- a job's stream -------------------------------------------------------------------


async def test_job_stream_replays_follows_and_ends_after_the_final_event(
    service: Service,
) -> None:
    job_id = await requested(service)
    await append(service, job_id, JobStarted(attempt=1))
    url = f"/api/jobs/{job_id}/events"
    with anyio.fail_after(LIMIT):
        async with sse(service, url, service.auth()) as (_, reader):
            replayed = await reader.events(2)
            assert [(f.id, f.event) for f in replayed] == [("1", "requested"), ("2", "started")]
            await append(service, job_id, JobProgressed(progress=50, message="half"))
            (progressed,) = await reader.events(1)
            assert (progressed.id, progressed.event) == ("3", "progressed")
            assert progressed.data["data"] == {"progress": 50, "message": "half"}
            await append(service, job_id, JobCompleted(result={"n": 1}))
            assert [(f.id, f.event) for f in await reader.rest()] == [("4", "completed")]
    history = (await service.client.get(url, headers=service.auth())).json()["events"]
    assert [f.data for f in [*replayed, progressed]] == history[:3]


async def test_a_failure_that_will_be_retried_does_not_end_the_stream(service: Service) -> None:
    job_id = await requested(service)
    await append(service, job_id, JobStarted(attempt=1))
    with anyio.fail_after(LIMIT):
        async with sse(service, f"/api/jobs/{job_id}/events", service.auth()) as (_, reader):
            await reader.events(2)
            last = JobFailed(error_code="ModelTimeout", error_message="slow", attempt=2)
            await append(service, job_id, replace(last, attempt=1, will_retry=True))
            await append(service, job_id, JobRetried(next_attempt_at=NOW))
            await append(service, job_id, JobStarted(attempt=2))
            await append(service, job_id, last)
            frames = await reader.rest()
    assert [f.event for f in frames] == ["failed", "retried", "started", "failed"]
    assert frames[-1].data["data"]["will_retry"] is False


async def test_resume_after_a_dropped_connection_loses_and_repeats_nothing(
    service: Service,
) -> None:
    job_id = await requested(service)
    url = f"/api/jobs/{job_id}/events"
    with anyio.fail_after(LIMIT):
        async with sse(service, url, service.auth()) as (_, reader):
            await append(service, job_id, JobStarted(attempt=1))
            seen = await reader.events(2)
        # the connection is gone; the job moves on meanwhile
        for n in (10, 20):
            await append(service, job_id, JobProgressed(progress=n))
        async with sse(service, url, service.auth(), seen[-1].id) as (_, reader):
            resumed = await reader.events(2)
            await append(service, job_id, JobCompleted())
            resumed += await reader.rest()
    assert ids(seen) + ids(resumed) == [1, 2, 3, 4, 5]
    assert [f.data["data"].get("progress") for f in resumed[:2]] == [10, 20]


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "+2", "1e3", "0x2"])
async def test_a_last_event_id_that_is_not_a_whole_number_is_ignored(
    service: Service, last_event_id: str
) -> None:
    job_id = await requested(service)
    await append(service, job_id, JobStarted(attempt=1), JobCompleted())
    url = f"/api/jobs/{job_id}/events"
    headers = {**service.auth(), "Last-Event-ID": last_event_id}
    with anyio.fail_after(LIMIT):
        async with sse(service, url, headers) as (r, reader):
            assert r.status_code == 200
            assert ids(await reader.rest()) == [1, 2, 3]


async def test_a_reconnect_after_the_final_event_gets_204(service: Service) -> None:
    job_id = await requested(service)
    await append(service, job_id, JobStarted(attempt=1), JobCompleted())
    url = f"/api/jobs/{job_id}/events"
    with anyio.fail_after(LIMIT):
        for seen in ("3", "7"):
            async with sse(service, url, service.auth(), seen) as (r, _):
                assert r.status_code == 204 and await r.aread() == b""
        async with sse(service, url, service.auth(), "2") as (r, reader):
            assert r.status_code == 200
            assert [(f.id, f.event) for f in await reader.rest()] == [("3", "completed")]


async def test_a_job_retried_by_hand_replays_past_its_first_failure(service: Service) -> None:
    job_id = await requested(service)
    failed = JobFailed(error_code="ResourceNotFound", error_message="no lead", attempt=1)
    await append(service, job_id, JobStarted(attempt=1), failed)
    url = f"/api/jobs/{job_id}/events"
    with anyio.fail_after(LIMIT):
        async with sse(service, url, service.auth(), "3") as (r, _):
            assert r.status_code == 204
        await append(service, job_id, JobRetried(next_attempt_at=NOW, manual=True))
        async with sse(service, url, service.auth()) as (_, reader):
            assert ids(await reader.events(4)) == [1, 2, 3, 4]  # not ended at `failed`
            await append(service, job_id, JobStarted(attempt=1), JobCompleted())
            assert ids(await reader.rest()) == [5, 6]


async def test_heartbeats_flow_while_nothing_happens(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_api, "HEARTBEAT_SECONDS", 0.1)
    job_id = await requested(service)
    with anyio.fail_after(LIMIT):
        for url in (f"/api/jobs/{job_id}/events", "/api/events"):
            async with sse(service, url, service.auth()) as (_, reader):
                if "jobs" in url:
                    await reader.events(1)
                for _ in range(2):
                    ping = await reader.next(skip_pings=False)
                    assert ping is not None and ping.comment == "ping", ping


# -- the site's feed ------------------------------------------------------------------


async def until_job(reader: SseReader, marker: str) -> list[Frame]:
    """Event frames up to and including the first of job `marker`."""
    frames = []
    while True:
        (frame,) = await reader.events(1)
        frames.append(frame)
        if frame.data["job_id"] == marker:
            return frames


async def test_the_feed_starts_after_the_request(service: Service) -> None:
    before = await requested(service)
    admin = service.auth(user="root", role="admin")
    with anyio.fail_after(LIMIT):
        async with sse(service, "/api/events", admin) as (_, reader):
            await append(service, before, JobStarted(attempt=1))
            r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=admin)
            job_id = r.json()["job_id"]
            frames = await until_job(reader, job_id)
    assert [(f.data["job_id"], f.event) for f in frames] == [
        (before, "started"),
        (job_id, "requested"),
    ]
    for f in frames:
        assert f.id == str(f.data["position"])
    assert ids(frames) == sorted(ids(frames))


async def test_the_feed_resumes_after_last_event_id(service: Service) -> None:
    admin = service.auth(user="root", role="admin")
    jobs = [await requested(service, user=u) for u in ("alice", "bob")]
    with anyio.fail_after(LIMIT):
        async with sse(service, "/api/events", admin) as (_, reader):
            await append(service, jobs[0], JobStarted(attempt=1))
            await append(service, jobs[1], JobStarted(attempt=1))
            first = await reader.events(2)
        # while disconnected: events of this site and of another, interleaved
        other = await requested(service, site="site2")
        await append(service, jobs[0], JobProgressed(progress=1))
        await append(service, other, JobStarted(attempt=1))
        await append(service, jobs[1], JobProgressed(progress=2))
        async with sse(service, "/api/events", admin, first[-1].id) as (_, reader):
            await append(service, jobs[0], JobCompleted())
            marker = await requested(service, user="carol")
            resumed = await until_job(reader, marker)
    site_feed = [
        e.position
        for e in await service.store.read_all(1, 1000)
        if e.stream.startswith("job:") and e.stream != f"job:{other}"
    ]
    positions = ids(first) + ids(resumed)
    assert positions == site_feed[2:]  # the two `requested` came before the first request
    assert [f.event for f in resumed] == ["progressed", "progressed", "completed", "requested"]


async def test_a_resumed_feed_replays_jobs_older_than_the_hub(service: Service) -> None:
    """Events from before the hub started need each job's owner read from its stream."""
    admin = service.auth(user="root", role="admin")
    mine = await requested(service)
    other = await requested(service, site="site2")
    await append(service, other, JobStarted(attempt=1))
    await append(service, mine, JobStarted(attempt=1))
    with anyio.fail_after(LIMIT):
        async with sse(service, "/api/events", admin, "0") as (_, reader):
            frames = await reader.events(2)
    assert [(f.data["job_id"], f.event) for f in frames] == [
        (mine, "requested"),
        (mine, "started"),
    ]


async def test_members_see_their_own_jobs_and_no_site_sees_another(service: Service) -> None:
    alice = service.auth(user="alice")
    admin = service.auth(user="root", role="admin")
    other_admin = service.auth(site="site2", user="root", role="admin")
    with anyio.fail_after(LIMIT):
        async with (
            sse(service, "/api/events", alice) as (_, alice_reader),
            sse(service, "/api/events", admin) as (_, admin_reader),
            sse(service, "/api/events", other_admin) as (_, other_reader),
        ):
            bobs = await requested(service, user="bob")
            elsewhere = await requested(service, site="site2", user="alice")
            alices = await requested(service, user="alice")
            await append(service, bobs, JobStarted(attempt=1))
            await append(service, elsewhere, JobStarted(attempt=1))
            await append(service, alices, JobStarted(attempt=1))
            marker = await requested(service, user="alice")
            site2_marker = await requested(service, site="site2", user="zed")
            seen_by_alice = await until_job(alice_reader, marker)
            seen_by_admin = await until_job(admin_reader, marker)
            seen_by_site2 = await until_job(other_reader, site2_marker)
    assert [f.data["job_id"] for f in seen_by_alice] == [alices, alices, marker]
    assert [f.data["job_id"] for f in seen_by_admin] == [bobs, alices, bobs, alices, marker]
    assert [f.data["job_id"] for f in seen_by_site2] == [elsewhere, elsewhere, site2_marker]


# -- the hub ------------------------------------------------------------------------


async def test_a_slow_subscriber_is_dropped_without_holding_up_others() -> None:
    store = MemoryStore()
    hub = FanoutHub(store, buffer=3)
    job_id = new_event_id()
    slow = hub.subscribe_feed("s", None)
    fast = hub.subscribe_feed("s", "u")
    of_job = hub.subscribe_job(job_id)
    first = JobRequested(job_type="noop", site_id="s", user_id="u")
    recorded = await store.append(f"job:{job_id}", [first], 0)
    for n in range(10):
        recorded += await store.append(f"job:{job_id}", [JobProgressed(progress=n)], n + 1)
    received: list[RecordedEvent] = []
    with anyio.fail_after(LIMIT):
        for event in recorded:
            await hub.publish(event)  # never waits for a subscriber
            while (got := await fast.receive(0)) is not None:
                received.append(got)
        assert received == recorded
        assert slow.dropped and of_job.dropped and not fast.dropped
        assert hub.subscribers == 1
        assert [await slow.receive(1) for _ in range(3)] == recorded[:3]
        with pytest.raises(anyio.EndOfStream):
            await slow.receive(1)
    for sub in (slow, fast, of_job):
        sub.close()
        sub.close()
    assert hub.subscribers == 0


async def test_the_hub_routes_by_job_site_and_user() -> None:
    store = MemoryStore()
    hub = FanoutHub(store, owners_cached=1)
    a, b = new_event_id(), new_event_id()
    await store.append(f"job:{a}", [JobRequested(job_type="x", site_id="s", user_id="u")], 0)
    await store.append(f"job:{b}", [JobRequested(job_type="x", site_id="t", user_id="u")], 0)
    of_a = hub.subscribe_job(a)
    of_u = hub.subscribe_feed("s", "u")
    of_v = hub.subscribe_feed("s", "v")
    site_t = hub.subscribe_feed("t", None)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            assert hub.position == 2  # follows from the store's head at startup
            await store.append(f"job:{a}", [JobStarted(attempt=1)], 1)  # owner read again
            await store.append(f"job:{b}", [JobStarted(attempt=1)], 1)
            started_a = await of_a.receive(LIMIT)
            assert started_a is not None and started_a.stream == f"job:{a}"
            assert await of_u.receive(LIMIT) == started_a
            started_b = await site_t.receive(LIMIT)
            assert started_b is not None and started_b.stream == f"job:{b}"
            assert hub.position == 4
            tg.cancel_scope.cancel()
    assert await of_v.receive(0) is None
    assert await of_a.receive(0) is None
    for sub in (of_a, of_u, of_v, site_t):
        sub.close()


# -- going away -----------------------------------------------------------------------


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Service, FanoutHub]]:
    """As the `service` fixture, with the app's hub at hand to look into."""
    settings = Settings(data=tmp_path / "data", secret=SECRET, job_types=frozenset({"noop"}))
    async with open_file_store(settings.data) as store:
        app = create_app(store, settings)
        async with served_client(app, within=LIMIT) as client:
            yield Service(client, store, settings, settings.data), app.state.events_hub


async def wait_until_unsubscribed(hub: FanoutHub) -> None:
    while hub.subscribers:  # noqa: ASYNC110 - the server notices a closed socket by itself
        await anyio.sleep(0.01)


async def test_a_client_that_goes_away_is_unsubscribed(tmp_path: Path) -> None:
    async with served(tmp_path) as (svc, hub):
        job_id = await requested(svc)
        url = f"/api/jobs/{job_id}/events"
        with anyio.fail_after(LIMIT):
            async with sse(svc, url, svc.auth()), sse(svc, "/api/events", svc.auth()):
                assert hub.subscribers == 2
            await wait_until_unsubscribed(hub)
            async with sse(svc, url, svc.auth(), "9") as (_, reader):
                assert hub.subscribers == 1
                hub.end_all()  # as at shutdown, or for a client that fell behind
                assert await reader.rest() == []  # the stream ends; a browser would resume
            await wait_until_unsubscribed(hub)
            r = await svc.client.get(url, headers={**SSE, **svc.auth(user="other")})
            assert r.status_code == 404
            assert hub.subscribers == 0  # nothing left behind by a refused stream
