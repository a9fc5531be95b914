"""The Starlette application: `create_app(store, settings)`, nothing at module level.

Resources are opened in the lifespan: the signing secret and the read model, which a
projection runner keeps current from the store's feed for as long as the app runs.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstore import EventStore
from eventstore.clock import utcnow
from eventstore.errors import JobtrailError, OutcomeUnknown, StorageError
from eventstore.filestore import FileStore
from projections.model import READ_MODEL_CHECKPOINT, ReadModel
from projections.runner import ProjectionRunner
from service import events_api, jobs_api, openapi, ops_api
from service.app_state import AppState
from service.auth import TokenCache, load_or_create_secret
from service.errors import JobNotFound, MethodNotAllowed, NotFound
from service.gone import gone_or
from service.http import EncodedViews, json_response, timestamp
from service.metrics import MeteredStore, Metrics
from service.settings import Settings
from service.views import job_json

API_PARTS = (jobs_api, ops_api, events_api)
"""Route modules: each has `routes`, and may have `lifespan(app, state)` for its resources."""

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

access_log = logging.getLogger("jobtrail.access")
log = logging.getLogger("jobtrail.service")


def checkpoint_path(store: EventStore) -> Path | None:
    """Where serve processes keep the read model's checkpoint: beside a file store's logs.

    Every serve process writes it atomically (a temporary file, then a rename), so they may
    share it; a start loads it and applies only the events after it. `jobtrail replay`
    compares it with a rebuild from the events.
    """
    if not isinstance(store, FileStore):
        return None
    folder = store.log.layout.root / "projections"
    folder.mkdir(exist_ok=True)
    return folder / READ_MODEL_CHECKPOINT


def create_app(
    store: EventStore, settings: Settings, *, clock: Callable[[], datetime] = utcnow
) -> Starlette:
    """The HTTP service over `store`; the caller owns the store and closes it."""
    metrics = Metrics()
    metered = MeteredStore(store, metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.secret = settings.secret or _secret_for(store)
        app.state.tokens = TokenCache(app.state.secret)
        model = ReadModel()
        metrics.watch_jobs(model.jobs)
        checkpoint = checkpoint_path(store)
        runner = ProjectionRunner(metered, model.projections, checkpoint)
        await runner.load_checkpoint()
        await runner.catch_up()
        state = AppState(metered, settings, model, runner, clock, metrics)
        app.state.jobtrail = state
        every = settings.checkpoint_seconds if checkpoint is not None else None
        async with anyio.create_task_group() as tg, AsyncExitStack() as parts:
            tg.start_soon(partial(runner.run, checkpoint_every=every))
            for part in API_PARTS:  # each part opens what its routes need
                opener = getattr(part, "lifespan", None)
                if opener is not None:
                    await parts.enter_async_context(opener(app, state))
            yield
            tg.cancel_scope.cancel()
        if checkpoint is not None:  # the next start applies only what came after this
            with anyio.CancelScope(shield=True):
                await runner.save_checkpoint()

    routes = [  # the router tries each in turn: the API's first
        *(route for part in API_PARTS for route in part.routes),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", partial(scrape, metrics), methods=["GET"]),
        Route("/openapi.json", partial(openapi_json, openapi.document()), methods=["GET"]),
    ]
    app = _Service(
        metrics,
        hot=[jobs_api.CREATE, jobs_api.POLL, events_api.SITE_EVENTS],
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            JobtrailError: _jobtrail_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.router.redirect_slashes = False  # `/api/jobs/` is an unknown route (404), not a 307
    app.state.job_bodies = EncodedViews(job_json)
    return app


class _Service(Starlette):
    """Starlette, with the request log outermost and the hot routes before Starlette's
    own layers (its error middleware is otherwise always the outermost)."""

    def __init__(self, metrics: Metrics, hot: list[Route], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._hot = hot

    def build_middleware_stack(self) -> ASGIApp:
        hot = HotRoutes(self._hot, self.exception_handlers)
        return RequestLog(super().build_middleware_stack(), hot, self._metrics)


class HotRoutes:
    """The routes taken most under load (creations, polls, the site's event stream) go
    straight to their endpoint, past Starlette's routing and its two exception layers,
    which cost a creation about a fifth of its event-loop time (docs/performance.md);
    errors get the app's answers. A route's path is literal, or has one parameter: its
    last segment. They stay in the router too, which answers 405 with every method."""

    def __init__(self, routes: list[Route], handlers: Mapping[Any, ErrorHandler]) -> None:
        self._literal: dict[tuple[str, str], Route] = {}
        self._last: dict[tuple[str, str], tuple[Route, str]] = {}
        for route in routes:
            if "{" not in route.path:
                self._literal.update({(m, route.path): route for m in route.methods or ()})
                continue
            prefix, _, name = route.path.rpartition("/{")
            name = name.removesuffix("}")
            if "{" in prefix or not name.isidentifier():
                raise ValueError(f"not a hot route: {route.path}")
            self._last.update({(m, prefix + "/"): (route, name) for m in route.methods or ()})
        self._handlers = handlers  # the app's own: {exception class: handler}

    def find(self, scope: Scope) -> tuple[Route, dict[str, str]] | None:
        """The hot route of this request and its path parameters, if it has one."""
        method, path = scope["method"], scope["path"]
        route = self._literal.get((method, path))
        if route is not None:
            return route, {}
        prefix, _, last = path.rpartition("/")
        found = self._last.get((method, prefix + "/"))
        if found is None or not last:  # Starlette's `{name}` takes one segment, not empty
            return None
        return found[0], {found[1]: last}

    async def serve(
        self, found: tuple[Route, dict[str, str]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        route, scope["path_params"] = found
        scope["route"] = route  # what the request log names the route by
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = next(self._handlers[c] for c in type(exc).__mro__ if c in self._handlers)
            response = await handler(request, exc)
        await response(scope, receive, send)


async def openapi_json(doc: dict[str, Any], request: Request) -> Response:
    return json_response(doc)


async def scrape(metrics: Metrics, request: Request) -> Response:
    """Prometheus text format of this process's metrics."""
    body = await anyio.to_thread.run_sync(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _secret_for(store: EventStore) -> str:
    if isinstance(store, FileStore):
        return load_or_create_secret(store.log.layout.root)
    return secrets.token_urlsafe(48)  # a store of this process only: tokens of this process


def error_body(request: Request, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "success": False,
        "error": code,
        "message": message,
        "timestamp": timestamp(utcnow()),
        "path": request.url.path,
        **extra,
    }


async def _jobtrail_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobtrailError)
    if isinstance(exc, JobNotFound):
        exc = await gone_or(request, exc)  # 410 for a job retention removed
    headers = dict(getattr(exc, "headers", {}) or {})
    if isinstance(exc, StorageError) or exc.status == 503:
        headers.setdefault("Retry-After", "5")
    if getattr(exc, "legacy", False):
        body = {"error": str(exc), "timestamp": timestamp(utcnow()), "path": request.url.path}
        return json_response(body, exc.status, headers)
    extra = getattr(exc, "extra", {})
    message = str(exc) if exc.status < 500 or exc.status == 503 else "Internal error."
    if isinstance(exc, OutcomeUnknown):
        log.error("storage unavailable: %r", exc)
        message = (
            "Storage is unavailable, and whether this request was applied is unknown: "
            "read before trying again, or repeat it with the same Idempotency-Key."
        )
    elif isinstance(exc, StorageError):
        log.error("storage unavailable: %r", exc)
        message = "Storage is unavailable; nothing was written. Try again later."
    return json_response(error_body(request, exc.code, message, **extra), exc.status, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err: JobtrailError = MethodNotAllowed(f"{request.method} is not allowed here.")
        headers = {"Allow": ", ".join(_allowed(request.scope))}
    else:
        err = NotFound("No such route.")
        headers = {}
    body = error_body(request, err.code, str(err))
    return json_response(body, err.status, headers)


def _allowed(scope: Scope) -> list[str]:
    """Every method of every route of this path (Starlette names the first route's only)."""
    router = scope["app"].router
    methods = {
        method
        for route in router.routes
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE
        for method in route.methods or ()
    }
    return sorted(methods)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(error_body(request, "InternalError", "Internal error."), 500)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the store answers reads (writes are checked by every append)."""
    state: AppState = request.app.state.jobtrail
    try:
        with anyio.fail_after(5):
            head = await state.store.head()
    except (StorageError, TimeoutError, OSError) as exc:
        log.warning("not ready: %r", exc)
        return json_response(error_body(request, "StorageUnavailable", "Store unavailable."), 503)
    return json_response({"status": "ready", "head": head, "applied": state.runner.position})


class RequestLog:
    """One JSON access-log line per request, and its id echoed in `X-Request-Id`; the
    request is routed on its path as sent (`keep_encoded_slashes`), to a hot route or
    else to `app` (Starlette's stack)."""

    def __init__(self, app: ASGIApp, hot: HotRoutes, metrics: Metrics) -> None:
        self.app = app
        self._hot = hot
        self.requests = metrics.requests
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:12] + "-"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        keep_encoded_slashes(scope)
        request_id = _request_id(scope, self._ids, self._prefix)
        echoed = request_id.encode("latin-1")
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":  # a message is sent once: ours
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", echoed)]
            await send(message)

        try:
            found = self._hot.find(scope)
            if found is None:
                await self.app(scope, receive, send_with_id)
            else:
                await self._hot.serve(found, scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.requests.observe(scope["method"], template, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "request_id": request_id,
                            "method": scope["method"],
                            "path": scope["path"],  # never the query: it may hold a token
                            "status": status,
                            "ms": round(elapsed * 1000, 2),
                        }
                    )
                )


_ENCODED_SLASH = re.compile(rb"%2[fF]")


def keep_encoded_slashes(scope: Scope) -> None:
    """Route on the path with each `%2F` kept as it came (the server decoded it into `/`):
    an id holding one is a malformed id (400 `InvalidId`), never a path to another route."""
    raw = scope.get("raw_path")
    if raw and b"%2" in raw and _ENCODED_SLASH.search(raw):
        parts = _ENCODED_SLASH.split(raw)
        scope["path"] = "%2F".join(unquote(part.decode("latin-1")) for part in parts)


def _request_id(scope: Scope, ids: Iterator[int], prefix: str) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = str(value.decode("latin-1"))
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return f"{prefix}{next(ids):x}"  # unique per process start, without a syscall
