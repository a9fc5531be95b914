"""Generic jobs (API.md section 2): create, poll, list, retry, the older status form."""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventstore.errors import InvalidId, WrongExpectedVersion
from eventstore.streams import valid_month
from projections.jobs import JobView
from projections.leads import EVALUATION_JOB_TYPE
from projections.listings import DEFAULT_PAGE_LIMIT, decode_cursor
from service import commands, evaluations, idempotency
from service.app_state import AppState
from service.auth import Principal
from service.errors import ApiError, StorageUnavailable, ValidationFailed
from service.evaluation_jobs import retry_evaluation
from service.http import (
    EncodedViews,
    caller_headers,
    check_identity_headers,
    check_integers,
    convert,
    encoded_response,
    identity_headers_wellformed,
    job_id_param,
    json_response,
    parse_json,
    principal_of,
    read_body,
)
from service.ops_common import ops_state
from service.views import job_json, legacy_job_json

SETTLE_SECONDS = 2.0
STATUSES = frozenset({"pending", "running", "completed", "failed", "cancelled"})
_LIMIT = re.compile(r"[0-9]{1,3}")  # ASCII digits only: str.isdigit() also takes "²"


async def create(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request)
    raw = await read_body(request, state.settings.max_json_bytes)
    identity_headers_wellformed(request)
    value = parse_json(raw)
    key = idempotency.key_of(request, who, value)
    check_identity_headers(request, who)
    body = convert({} if value is None else value, commands.JobCreate)
    _check_create(body, state)
    if body.type == "ai_evaluation":  # section 1's rules: a lead, quota, one at a time
        evaluation = await evaluations.create_generic(
            state,
            ops_state(request).locks,
            who,
            body,
            key=key,
            respond=lambda accepted: _accepted(accepted.job_id),
        )
        return _created(evaluation.body, evaluation.status)
    for _ in range(commands.CONFLICT_RETRIES):
        version = 0
        if key is not None:
            first, version = await idempotency.recall(state.store, key, state.clock())
            if first is not None:
                return _created(first.response, first.status)
        job_id = commands.new_job_id()
        answer = _accepted(job_id)
        also = [] if key is None else [idempotency.remember(key, version, job_id, 202, answer)]
        try:
            await commands.create_job(state.store, who, body, job_id, also)
        except WrongExpectedVersion:
            continue  # a repeat with the same key won the race: answer what it stored
        # No wait for the read model here: a poll of a job it does not hold yet reads
        # the job's own stream, so the new job is visible at once all the same.
        return _created(answer, 202)
    raise StorageUnavailable("The request kept conflicting; try again.")


CREATE = Route("/api/jobs", create, methods=["POST"])
"""Job creation: also taken straight to `create` by the app's `HotRoutes`."""


async def settle(state: AppState, position: int) -> None:
    """Let this process's read model apply what a command changed (read-your-writes):
    polls answer from the read model, which would otherwise show the job as it was."""
    with anyio.move_on_after(SETTLE_SECONDS):
        await state.runner.wait_for(position)


def _accepted(job_id: str) -> dict[str, Any]:
    poll = f"/api/jobs/{job_id}"
    return {
        "status": "accepted",
        "job_id": job_id,
        "message": f"Job accepted. Poll {poll} for status.",
        "poll_url": poll,
        "events_url": f"{poll}/events",
    }


def _created(answer: dict[str, Any], status: int) -> Response:
    return json_response(answer, status, {"Location": str(answer["poll_url"])})


def _check_create(body: commands.JobCreate, state: AppState) -> None:
    if body.type not in state.settings.job_types:
        raise ValidationFailed(f"type: unknown job type {body.type[:80]!r}")
    if not -10 <= body.priority <= 10:
        raise ValidationFailed("priority: must be an integer from -10 to 10")
    if not 1 <= body.max_retries <= 10:
        raise ValidationFailed("max_retries: must be an integer from 1 to 10")
    check_integers(body.params, "params")
    check_integers(body.metadata, "metadata")


async def get(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request)
    job_id = job_id_param(request)
    check_identity_headers(request, who)
    wait = preferred_wait(request, state.settings.max_wait_seconds)
    # A poll is answered from the read model, kept current from the feed by this
    # process's follower (milliseconds behind another process's append); a job it does
    # not hold yet, such as one created a moment ago, is read from its own stream.
    known = state.model.jobs.get(job_id)
    if known is not None and commands.may_see(known, who):
        job = known
    else:
        job = await commands.visible_job(state.store, job_id, who)
    headers = _poll_headers(job.status, state)
    if wait is not None:
        job = await wait_for_change(state, job, who, wait)
        headers = {**_poll_headers(job.status, state), "Preference-Applied": f"wait={wait}"}
    bodies: EncodedViews[JobView] = request.app.state.job_bodies  # unchanged job: as encoded
    return encoded_response(bodies.body(job.job_id, job), 200, headers)


POLL = Route("/api/jobs/{job_id}", get, methods=["GET"])
"""Polling: also taken straight to `get` by the app's `HotRoutes`."""

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*([0-9]+)(?:$|[;,\s])")


def preferred_wait(request: Request, cap: int) -> int | None:
    """`Prefer: wait=N` (RFC 7240): whole seconds to hold a poll, above `cap` read as `cap`."""
    prefer = caller_headers(request).prefer
    if prefer is None:
        return None
    m = _PREFER_WAIT.search(prefer)
    if m is None:
        return None
    digits = m.group(1).lstrip("0") or "0"  # any whole number: ten digits are above 30 too
    return min(int(digits), cap) if len(digits) <= 9 else cap


async def wait_for_change(state: AppState, job: JobView, who: Principal, seconds: int) -> JobView:
    """Hold until the job has a new event or `seconds` pass; a final job answers at once.

    Woken by the read model's feed follower (one per process, itself woken by the store's
    watcher), then the job's own stream is re-read, so the answer is current.
    """
    deadline = anyio.current_time() + seconds
    seen = job.version
    while not job.is_final and job.version == seen:
        left = deadline - anyio.current_time()
        if left <= 0:
            break
        await state.runner.wait_past(state.runner.position, left)
        job = await commands.visible_job(state.store, job.job_id, who)
    return job


def _poll_headers(status: str, state: AppState) -> dict[str, str]:
    if status in ("pending", "running"):
        return {"Retry-After": str(state.settings.poll_retry_after)}
    return {}


async def listing(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request)
    check_identity_headers(request, who)
    params = request.query_params
    statuses = None
    if raw_status := params.get("status"):
        statuses = frozenset(s.strip() for s in raw_status.split(","))
        if not statuses <= STATUSES:
            raise ValidationFailed(f"status: one or more of {', '.join(sorted(STATUSES))}")
    limit = DEFAULT_PAGE_LIMIT
    if (raw_limit := params.get("limit")) is not None:
        if _LIMIT.fullmatch(raw_limit) is None or not 1 <= int(raw_limit) <= 500:
            raise ValidationFailed("limit: an integer from 1 to 500")
        limit = int(raw_limit)
    cursor = params.get("cursor")
    if cursor is not None:
        decode_cursor(cursor)  # InvalidCursor (422) names the parameter
    await state.runner.catch_up()
    page = state.model.listings.page(
        who.site_id,
        user_id=None if who.is_admin else who.user_id,
        statuses=statuses,
        job_type=params.get("type") or None,
        limit=limit,
        cursor=cursor,
    )
    jobs = [job_json(job) for job in page.jobs]
    return json_response({"jobs": jobs, "count": len(jobs), "next_cursor": page.next_cursor})


async def retry(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request)
    job_id = job_id_param(request)
    check_identity_headers(request, who)
    job = await commands.visible_job(state.store, job_id, who)
    if job.job_type == EVALUATION_JOB_TYPE:  # one evaluation of a lead at a time (409)
        job = await retry_evaluation(state, ops_state(request).locks, who, job_id)
    else:
        job = await commands.retry_job(state.store, who, job_id, state.clock)
    await settle(state, job.position)
    return json_response(job_json(job), 202, _poll_headers(job.status, state))


async def cancel(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request)
    job_id = job_id_param(request)
    check_identity_headers(request, who)
    job = await commands.cancel_job(state.store, who, job_id)
    await settle(state, job.position)
    return json_response(job_json(job), 202, _poll_headers(job.status, state))


async def legacy_status(request: Request) -> Response:
    """The older store's form; this one route answers every error in that store's shape."""
    state: AppState = request.app.state.jobtrail
    try:
        who = principal_of(request)
        job_id = job_id_param(request)
        check_identity_headers(request, who)
        job = await commands.visible_job(state.store, job_id, who)
    except ApiError as exc:
        raise LegacyError(exc) from None
    except Exception as exc:
        raise LegacyError(exc) from None
    return json_response(legacy_job_json(job))


class LegacyError(ApiError):
    """An error of `/api/job-status`, answered as `{"error", "timestamp", "path"}`."""

    _TEXT = {
        400: "Invalid job_id format (must be UUID)",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Job not found",
        503: "Service unavailable",
    }

    def __init__(self, cause: Exception) -> None:
        status = int(getattr(cause, "status", 500))
        super().__init__(self._TEXT.get(status, "Internal error"))
        self.status = status
        self.code = self.message
        self.legacy = True


async def usage(request: Request) -> Response:
    state: AppState = request.app.state.jobtrail
    who = principal_of(request)
    check_identity_headers(request, who)
    month = request.query_params.get("month") or state.month()
    try:
        valid_month(month)
    except InvalidId:
        raise ValidationFailed("month: must be YYYY-MM") from None
    await state.runner.catch_up()
    u = state.model.usage.usage(who.site_id, month)
    answer: dict[str, Any] = {
        "used": u.used,
        "limit": u.limit,
        "remaining": u.remaining,
        "month": u.month,
        "tier": u.tier,
    }
    return json_response(answer)


routes = [  # polls and creations reach the router only with another method (405)
    POLL,
    CREATE,
    Route("/api/jobs", listing, methods=["GET"]),
    Route("/api/jobs/{job_id}/retry", retry, methods=["POST"]),
    Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    Route("/api/job-status/{job_id}", legacy_status, methods=["GET"]),
    Route("/api/usage", usage, methods=["GET"]),
]
