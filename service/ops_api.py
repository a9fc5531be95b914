"""Lead AI evaluation (API.md section 1): leads, documents, evaluation jobs, quota.

Each handler runs the checks in the API's order: token (401), body size (413), ids, headers
and JSON (400), headers against the token (403), body (422), then the command's own 404,
409 and 429. Jobs are read from their own streams, so every serve process answers current.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Final

import anyio
import msgspec
from msgspec import Meta
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from eventstore import WrongExpectedVersion, streams
from eventstore.events import QuotaSet
from projections.jobs import JobView
from projections.usage import Quota, usage_of
from service import evaluation_jobs, evaluations, idempotency, ops_leads
from service.app_state import AppState
from service.blobs import BlobStore, blob_root
from service.errors import Forbidden, StorageUnavailable, ValidationFailed
from service.evaluation_views import evaluation_form
from service.http import (
    check_identity_headers,
    convert,
    job_id_param,
    json_response,
    principal_of,
    read_body,
)
from service.ops_common import (
    OpsState,
    SiteLocks,
    app_state,
    lead_id_param,
    ops_state,
    parse_body,
    require_ops_headers,
)

CONFLICT_RETRIES: Final = 20


@asynccontextmanager
async def lifespan(app: Starlette, state: AppState) -> AsyncIterator[None]:
    """Open the blob store beside the store's data, and the per-site locks."""
    blobs = await BlobStore.open(blob_root(state.store, state.settings))
    app.state.ops = OpsState(blobs, SiteLocks())
    yield


async def create_evaluation(request: Request) -> Response:
    state, ops = app_state(request), ops_state(request)
    who = principal_of(request)
    raw = await read_body(request, state.settings.max_json_bytes)
    lead_id = lead_id_param(request)
    require_ops_headers(request, user=True)
    value = parse_body(raw)
    key = idempotency.key_of(request, who, value)
    check_identity_headers(request, who)
    if value is None and raw.strip():  # a JSON `null` is a body, and not an object
        raise ValidationFailed("body: Expected `object`, got `null`")
    options = evaluations.options_of(value, state)
    answer = await evaluations.create_evaluation(state, ops.locks, who, lead_id, options, key=key)
    location = f"/api/ops/ai-evaluation-jobs/{answer.body['data']['job_id']}"
    return json_response(answer.body, answer.status, {"Location": location})


def _answer(state: AppState, job: JobView, headers: dict[str, str] | None = None) -> Response:
    data, status = evaluation_form(job, state.clock())
    headers = dict(headers or {})
    if status == 202:
        headers["Retry-After"] = str(state.settings.poll_retry_after)
    return json_response({"success": True, "data": data}, status, headers)


def prefer_wait(request: Request, cap: int) -> int | None:
    """N of `Prefer: wait=N` (whole seconds, above `cap` read as `cap`); None if absent."""
    for value in request.headers.getlist("prefer"):
        for part in value.split(","):
            name, _, arg = part.partition("=")
            arg = arg.strip().strip('"')
            if name.strip().lower() == "wait" and arg.isascii() and arg.isdigit():
                digits = arg.lstrip("0") or "0"  # int() refuses 4,300 digits and more
                return min(int(digits), cap) if len(digits) <= 9 else cap
    return None


async def _wait_for_news(state: AppState, job: JobView, seconds: int) -> None:
    """Until the read model holds an event of the job newer than `job`, or `seconds` pass."""
    with anyio.move_on_after(seconds):
        while True:
            seen = state.runner.position
            current = state.model.jobs.get(job.job_id)
            if current is not None and current.version > job.version:
                return
            await state.runner.wait_for(seen + 1)


async def get_job(request: Request) -> Response:
    state = app_state(request)
    who = principal_of(request)
    job_id = job_id_param(request)
    require_ops_headers(request)
    check_identity_headers(request, who)
    job = await evaluation_jobs.evaluation_job(state.store, who, job_id)
    wait = prefer_wait(request, state.settings.max_wait_seconds)
    if wait is None:
        return _answer(state, job)
    if not job.is_final and wait > 0:
        await _wait_for_news(state, job, wait)
        job = await evaluation_jobs.evaluation_job(state.store, who, job_id)
    return _answer(state, job, {"Preference-Applied": f"wait={wait}"})


async def retry_job(request: Request) -> Response:
    state, ops = app_state(request), ops_state(request)
    who = principal_of(request)
    job_id = job_id_param(request)
    require_ops_headers(request)
    check_identity_headers(request, who)
    job = await evaluation_jobs.retry_evaluation(state, ops.locks, who, job_id)
    data, _ = evaluation_form(job, state.clock())
    headers = {"Retry-After": str(state.settings.poll_retry_after)}
    return json_response({"success": True, "data": data}, 202, headers)


async def cancel_job(request: Request) -> Response:
    """As `POST /api/jobs/{id}/cancel` (202 whatever the outcome), in this section's form."""
    state = app_state(request)
    who = principal_of(request)
    job_id = job_id_param(request)
    require_ops_headers(request)
    check_identity_headers(request, who)
    job = await evaluation_jobs.cancel_evaluation(state.store, who, job_id)
    data, status = evaluation_form(job, state.clock())
    headers = {"Retry-After": str(state.settings.poll_retry_after)} if status == 202 else {}
    return json_response({"success": True, "data": data}, 202, headers)


class QuotaBody(msgspec.Struct):
    """The body of `PUT /api/ops/sites/{site_id}/quota`."""

    limit: Annotated[int, Meta(ge=0, le=2**63 - 1)]  # what the store can keep
    tier: Annotated[str, Meta(min_length=1, max_length=64)]


async def set_quota(request: Request) -> Response:
    """An admin sets the site's limit and tier from this month on; 200 with this month's usage."""
    state = app_state(request)
    who = principal_of(request)
    raw = await read_body(request, state.settings.max_json_bytes)
    site_id = streams.valid_id(request.path_params["site_id"], "site id")
    require_ops_headers(request)
    value = parse_body(raw)
    check_identity_headers(request, who)
    if site_id != who.site_id or not who.is_admin:
        raise Forbidden("Only an admin of this site may set its quota.")
    if not isinstance(value, dict):
        raise ValidationFailed("body: a JSON object {limit, tier} is required")
    body = convert(value, QuotaBody)
    month = state.month()
    event = QuotaSet(limit=body.limit, tier=body.tier, from_month=month, by=who.user_id)
    stream = streams.site(site_id)
    for _ in range(CONFLICT_RETRIES):
        version = await state.store.stream_version(stream)
        try:
            await state.store.append(stream, [event], version)
        except WrongExpectedVersion:
            continue
        used = await state.store.stream_version(streams.usage(site_id, month))
        usage = usage_of(used, Quota(limit=body.limit, tier=body.tier, from_month=month), month)
        return json_response(msgspec.to_builtins(usage))
    raise StorageUnavailable("The site's settings kept changing; try again.")


routes: list[BaseRoute] = [
    *ops_leads.routes,
    Route("/api/ops/leads/{lead_id}/ai-evaluation", create_evaluation, methods=["POST"]),
    Route("/api/ops/ai-evaluation-jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/ops/ai-evaluation-jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/api/ops/ai-evaluation-jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/api/ops/sites/{site_id}/quota", set_quota, methods=["PUT"]),
]
