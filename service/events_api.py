"""Events (API.md section 3): a job's history as JSON, and live Server-Sent-Event streams.

Every stream subscribes to the process's one `FanoutHub` first, then replays from the
store, then follows live, skipping what the replay already sent: so a reconnect with
`Last-Event-ID` loses nothing and repeats nothing, whatever raced in between.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from eventstore import RecordedEvent, streams
from projections.jobs import JobView, apply_job
from service.app_state import AppState
from service.auth import Principal
from service.commands import visible_job
from service.fanout import FanoutHub, Subscription
from service.http import (
    check_identity_headers,
    job_id_param,
    json_response,
    principal_of,
    timestamp,
)

HEARTBEAT_SECONDS = 10.0
"""Longest silence before a `: ping` comment; below the 15 s API.md promises, and read
per stream, so tests may lower it."""

FRAMES_CACHED: Final = 1024
"""Live events whose JSON is kept, so a thousand subscribers share one encoding."""

RETRY_MS: Final = 3000
REPLAY_PAGE: Final = 1000

_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)
_PING: Final = b": ping\n\n"
_STREAM_HEADERS: Final = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


# -- the event as JSON and as an SSE frame ----------------------------------------------


def event_json(recorded: RecordedEvent) -> dict[str, Any]:
    """An event as API.md shows it: the envelope, and its fields without the `type` tag."""
    event = recorded.event
    data = {name: _plain(getattr(event, name)) for name in event.__struct_fields__}
    return {
        "id": recorded.id,
        "job_id": streams.job_id_of(recorded.stream),
        "version": recorded.version,
        "position": recorded.position,
        "type": recorded.type,
        "recorded_at": timestamp(recorded.recorded_at),
        "data": data,
    }


def _plain(value: object) -> object:
    return timestamp(value) if isinstance(value, datetime) else value


def frame(recorded: RecordedEvent, event_id: int, data: bytes | None = None) -> bytes:
    """One SSE event; JSON never holds a raw newline, so `data` is one line."""
    if data is None:
        data = _ENCODER.encode(event_json(recorded))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, recorded.type.encode(), data)


class FrameCache:
    """The JSON of recent live events by position, encoded once for all their streams
    (every subscriber gets the same event; only the `id:` line differs by route)."""

    def __init__(self, size: int = FRAMES_CACHED) -> None:
        self._size = size
        self._data: dict[int, bytes] = {}

    def frame(self, recorded: RecordedEvent, event_id: int) -> bytes:
        data = self._data.get(recorded.position)
        if data is None:
            if len(self._data) >= self._size:
                del self._data[next(iter(self._data))]  # the oldest: dicts keep their order
            data = self._data[recorded.position] = _ENCODER.encode(event_json(recorded))
        return frame(recorded, event_id, data)


# -- requests -----------------------------------------------------------------------


def wants_event_stream(request: Request) -> bool:
    """True when `Accept` names `text/event-stream` itself (not `*/*`) with q above 0."""
    for item in request.headers.get("accept", "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media != "text/event-stream":
            continue
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True
    return False


def last_event_id(request: Request) -> int | None:
    """`Last-Event-ID` as a whole number; None when absent or anything else (ignored)."""
    value = request.headers.get("last-event-id", "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    try:
        return int(value)
    except ValueError:  # more digits than int() takes: not an id we ever sent
        return None


def _hub(request: Request) -> FanoutHub:
    hub: FanoutHub = request.app.state.events_hub
    return hub


class EventStream(StreamingResponse):
    """An SSE response that closes its generator and its subscription however it ends.

    One task writes; one more waits for the client to go away and ticks the subscription
    every half heartbeat, so no timer is set per event.
    """

    def __init__(
        self, body: AsyncGenerator[bytes, None], subscription: Subscription, heartbeat: float
    ) -> None:
        super().__init__(body, media_type="text/event-stream", headers=_STREAM_HEADERS)
        self._body = body
        self._subscription = subscription
        self._tick = heartbeat / 2

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gauge = scope["app"].state.jobtrail.metrics.sse_streams
        gauge.inc()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen, receive, tg.cancel_scope)
                async for chunk in self._body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        except* OSError:
            pass  # the client went away mid-write (ASGI 2.4 servers say so this way)
        finally:
            gauge.dec()
            with anyio.CancelScope(shield=True):
                await self._body.aclose()  # a generator left at a `yield` by a disconnect
            self._subscription.close()

    async def _listen(self, receive: Receive, writing: anyio.CancelScope) -> None:
        """Stop the writer when the client disconnects; tick the heartbeat meanwhile."""
        while True:
            with anyio.move_on_after(self._tick):
                if (await receive())["type"] == "http.disconnect":
                    writing.cancel()
                    return
                continue
            self._subscription.tick()


# -- GET /api/jobs/{job_id}/events ------------------------------------------------------


async def job_events(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request, query_token=True)
    job_id = job_id_param(request)
    check_identity_headers(request, who)
    await visible_job(state.store, job_id, who)
    stream = streams.job(job_id)
    if not wants_event_stream(request):
        history = await state.store.read_stream(stream)
        return json_response({"events": [event_json(e) for e in history]})
    seen = last_event_id(request)
    sub = _hub(request).subscribe_job(job_id)  # before the read: nothing falls in between
    try:
        history = await state.store.read_stream(stream)
        view = _fold(None, history)
        assert view is not None  # visible_job saw `requested`
        if seen is not None and view.is_final and seen >= view.version:
            sub.close()
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        # an id past the stream's end was never sent by us: follow from the end
        after = 0 if seen is None else min(seen, view.version)
        replay = [e for e in history if e.version > after]
        body = _job_frames(sub, _frames(request), view, replay, after)
    except BaseException:
        sub.close()
        raise
    return EventStream(body, sub, HEARTBEAT_SECONDS)


def _fold(view: JobView | None, events: list[RecordedEvent]) -> JobView | None:
    for recorded in events:
        view = apply_job(view, recorded)
    return view


async def _job_frames(
    sub: Subscription,
    frames: FrameCache,
    view: JobView,
    replay: list[RecordedEvent],
    after: int,
) -> AsyncGenerator[bytes, None]:
    """Replay, then live events until one leaves the job final; `id:` is the version.

    `view` is the job after the whole replay, so a job retried by hand after it failed
    replays on past that failure. Events that arrived together go out in one chunk.
    """
    yield b"retry: %d\n\n" % RETRY_MS
    for recorded in replay:
        yield frame(recorded, recorded.version)
        after = recorded.version
    sent = True  # since the previous heartbeat tick
    while not view.is_final:
        try:
            batch = await sub.batch()
        except anyio.EndOfStream:
            return  # dropped for falling behind, or shutdown: the client resumes after `after`
        if not batch:  # a tick: ping if the tick before it saw nothing go out either
            if not sent:
                yield _PING
            sent = not sent
            continue
        chunk = []
        for live in batch:
            if live.version > after:  # else the replay sent it already
                view = apply_job(view, live) or view
                chunk.append(frames.frame(live, live.version))
                after = live.version
                if view.is_final:
                    break
        if chunk:
            yield b"".join(chunk)
            sent = True


# -- GET /api/events ---------------------------------------------------------------------


async def site_events(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request, query_token=True)
    check_identity_headers(request, who)
    seen = last_event_id(request)
    hub = _hub(request)
    sub = hub.subscribe_feed(who.site_id, None if who.is_admin else who.user_id)
    try:
        head = await state.store.head()  # after subscribing: the live part starts at or before
        after = head if seen is None else min(seen, head)
        body = _site_frames(sub, _frames(request), _visible_to(who, hub), state, after)
    except BaseException:
        sub.close()
        raise
    return EventStream(body, sub, HEARTBEAT_SECONDS)


def _visible_to(who: Principal, hub: FanoutHub) -> Callable[[RecordedEvent], Awaitable[bool]]:
    async def visible(recorded: RecordedEvent) -> bool:
        owner = await hub.owner_of(recorded)
        return (
            owner is not None
            and owner.site_id == who.site_id
            and (who.is_admin or owner.user_id == who.user_id)
        )

    return visible


async def _site_frames(
    sub: Subscription,
    frames: FrameCache,
    visible: Callable[[RecordedEvent], Awaitable[bool]],
    state: AppState,
    after: int,
) -> AsyncGenerator[bytes, None]:
    """Replay the feed after `after` up to where the subscription took over, then live;
    `id:` is the position. The hub has filtered live events already."""
    yield b"retry: %d\n\n" % RETRY_MS
    while after < sub.start:
        page = await state.store.read_all(after + 1, REPLAY_PAGE)
        if not page:
            break
        for recorded in page:
            if await visible(recorded):
                yield frame(recorded, recorded.position)
            after = recorded.position
    sent = True  # since the previous heartbeat tick
    while True:
        try:
            batch = await sub.batch()
        except anyio.EndOfStream:
            return
        if not batch:  # a tick: ping if the tick before it saw nothing go out either
            if not sent:
                yield _PING
            sent = not sent
            continue
        chunk = [frames.frame(live, live.position) for live in batch if live.position > after]
        after = max(after, batch[-1].position)
        if chunk:
            yield b"".join(chunk)
            sent = True


def _frames(request: Request) -> FrameCache:
    cache: FrameCache = request.app.state.event_frames
    return cache


# -- wiring ------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: Starlette, state: AppState) -> AsyncIterator[None]:
    """One feed follower for the whole process, from the store's head at startup."""
    hub = FanoutHub(state.store)
    app.state.event_frames = FrameCache()
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        app.state.events_hub = hub
        try:
            yield
        finally:
            hub.end_all()
            tg.cancel_scope.cancel()


SITE_EVENTS = Route("/api/events", site_events, methods=["GET"])
"""The site stream: also taken straight to `site_events` by the app's `HotRoutes`, so each
live event on each stream passes fewer `send` wrappers."""

routes = [
    Route("/api/jobs/{job_id}/events", job_events, methods=["GET"]),
    SITE_EVENTS,
]
