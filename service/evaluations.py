"""Creating evaluation jobs (API.md section 1): under the monthly quota, one per lead at a time.

A create decides on what it read, then appends it all in ONE `append_many`:

    job:<new id>           JobRequested    expected 0
    usage:<site>:<month>   QuotaReserved   expected = the usage stream's version read (= used)
    site:<site>            (no events)     expected = the settings' version read
    lead:<site>:<lead>     EvaluationQueued expected = the lead's version read

so a conflict means another create, a quota change or a change of the lead came first, and
the create re-reads and decides again; `used` can never pass the limit, across processes too.
Every create of a site and month appends to its usage stream, so creates for one lead are
serialized by it as well: the jobs are looked at after the usage version was read, so a
create whose append succeeds has seen every job accepted before it. A manual retry and a
create, or two creates on either side of a month boundary, are serialized by the
lead stream: each appends `EvaluationQueued` with the lead version it read before looking
at the lead's jobs.

`estimated_completion` = requested_at + average x (1 + ahead): `average` is the mean run
time (started -> completed) of the site's 10 most recently requested completed evaluation
jobs, 30 s when it has none; `ahead` is how many of the site's evaluation jobs were pending
or processing when this one was accepted (pessimistic when workers run several at once).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, NamedTuple

import anyio
import msgspec
from msgspec import Meta

from eventstore import NO_STREAM, AppendTo, WrongExpectedVersion, new, streams
from eventstore.events import EvaluationQueued, JobRequested
from eventstore.records import new_event_id
from projections.leads import EVALUATION_JOB_TYPE
from projections.usage import Usage, decide_reservation, load_site_settings
from service import idempotency
from service.app_state import AppState
from service.auth import Principal
from service.commands import JobCreate
from service.errors import (
    ApiError,
    StorageUnavailable,
    ValidationFailed,
)
from service.http import convert, timestamp
from service.lead_jobs import (
    ACTIVE,
    expected_wait,
    latest_evaluation,
    lead_jobs,
    site_evaluations,
)
from service.ops_common import SiteLocks, existing_lead

AUTO: Final = "auto"
CONFLICT_RETRIES: Final = 40


class JobAlreadyPending(ApiError):
    """A job for this lead is pending or processing."""

    code = "JobAlreadyPending"
    status = 409


class AlreadyEvaluated(ApiError):
    """The lead has a completed evaluation and `force_refresh` was not asked for."""

    code = "AlreadyEvaluated"
    status = 409


class QuotaExceeded(ApiError):
    """The site's evaluations of this month reached its limit."""

    code = "QuotaExceeded"
    status = 429

    def __init__(self, usage: Usage, now: datetime) -> None:
        super().__init__(
            f"Monthly evaluation limit ({usage.limit}) reached for this site.",
            usage={
                "used": usage.used,
                "limit": usage.limit,
                "month": usage.month,
                "tier": usage.tier,
            },
        )
        self.headers["Retry-After"] = str(seconds_to_next_month(now))


def seconds_to_next_month(now: datetime) -> int:
    """Whole seconds until the next UTC month begins (at least 1)."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (first + timedelta(days=32)).replace(day=1)
    return max(1, math.ceil((following - now).total_seconds()))


class EvaluationOptions(msgspec.Struct, forbid_unknown_fields=False):
    """The optional body of a create."""

    force_refresh: bool = False
    model_version: str = AUTO


class EvaluationParams(msgspec.Struct, forbid_unknown_fields=False):
    """`params` of `POST /api/jobs` with type `ai_evaluation`."""

    lead_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    force_refresh: bool = False
    model_version: str = AUTO


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    lead_id: str
    requested_at: datetime
    estimated_completion: datetime
    usage: Usage


def accepted_models(state: AppState) -> frozenset[str]:
    """`auto` or the configured evaluator's model: the LLM's when one is set, else the rules'."""
    return frozenset({AUTO, state.settings.evaluation_model})


def options_of(value: Any, state: AppState) -> EvaluationOptions:
    """The create's options from its parsed body (None: no body); 422 naming the field."""
    if value is None:
        return EvaluationOptions()
    if not isinstance(value, dict):
        raise ValidationFailed("body: Expected `object`")
    options = convert(value, EvaluationOptions)
    _check_model(options.model_version, state, "model_version")
    return options


def _check_model(model: str, state: AppState, field: str) -> None:
    models = accepted_models(state)
    if model not in models:
        raise ValidationFailed(f"{field}: one of {', '.join(sorted(models))}")


class Answer(NamedTuple):
    """A create's answer: its status and body (the first answer again, for a repeated key)."""

    status: int
    body: dict[str, Any]


def ops_answer(accepted: Accepted) -> dict[str, Any]:
    """The body of a 201 of `POST /api/ops/leads/{lead_id}/ai-evaluation`."""
    return {
        "success": True,
        "data": {
            "job_id": accepted.job_id,
            "lead_id": accepted.lead_id,
            "status": "pending",
            "requested_at": timestamp(accepted.requested_at),
            "estimated_completion": timestamp(accepted.estimated_completion),
        },
        "usage": {
            "remaining": accepted.usage.remaining,
            "limit": accepted.usage.limit,
            "month": accepted.usage.month,
        },
    }


async def create_evaluation(
    state: AppState,
    locks: SiteLocks,
    who: Principal,
    lead_id: str,
    options: EvaluationOptions,
    *,
    key: idempotency.Key | None = None,
    respond: Callable[[Accepted], dict[str, Any]] = ops_answer,
    status: int = 201,
    job: JobCreate | None = None,
) -> Answer:
    """Accept an evaluation job: 404, 409 and 429 in that order, then one atomic append.

    With an Idempotency-Key, the answer (`respond`'s body) is stored in the same append;
    a repeat gets it back. `job` gives the generic route's priority, retries and metadata.
    """
    async with locks.of(who.site_id):
        for attempt in range(CONFLICT_RETRIES):
            kept_version = 0
            if key is not None:
                first, kept_version = await idempotency.recall(state.store, key, state.clock())
                if first is not None:
                    return Answer(first.status, first.response)
            accepted, batch = await _decide(state, who, lead_id, options, job)
            body = respond(accepted)
            if key is not None:
                batch.append(idempotency.remember(key, kept_version, accepted.job_id, status, body))
            try:
                await state.store.append_many(batch)
            except WrongExpectedVersion:
                await anyio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue  # another create, a setting, the lead or a repeat came first
            return Answer(status, body)
    raise StorageUnavailable("Too many concurrent requests for this site; try again.")


async def _decide(
    state: AppState,
    who: Principal,
    lead_id: str,
    options: EvaluationOptions,
    job: JobCreate | None,
) -> tuple[Accepted, list[AppendTo]]:
    """Read, decide (404, 409, 429) and return the appends that make the decision safe."""
    site_id, store = who.site_id, state.store
    month = state.month()
    # Read the usage and lead versions first: everything read after them is at least as
    # new, and the append below checks both.
    used = await store.stream_version(streams.usage(site_id, month))
    settings = await load_site_settings(store, site_id)
    lead = await existing_lead(store, site_id, lead_id)
    await state.runner.catch_up()
    active = next(lead_jobs(site_evaluations(state.model, site_id, ACTIVE), lead_id), None)
    if active is not None:
        raise JobAlreadyPending(
            "An evaluation is already in progress for this lead.", job_id=active.job_id
        )
    done = None if options.force_refresh else latest_evaluation(state.model, lead)
    if done is not None:
        raise AlreadyEvaluated(
            "Lead already evaluated. Use force_refresh=true to re-evaluate.",
            evaluation_id=done[0],
            job_id=done[1],
        )
    job_id = new_event_id()
    decision = decide_reservation(
        site_id,
        month,
        usage_version=used,
        settings=settings,
        job_id=job_id,
        event_id=new_event_id(),
    )
    if not decision.allowed:
        raise QuotaExceeded(decision.usage, state.clock())
    job = job or JobCreate(type=EVALUATION_JOB_TYPE)
    requested = JobRequested(
        job_type=EVALUATION_JOB_TYPE,
        site_id=site_id,
        user_id=who.user_id,
        params={
            "lead_id": lead_id,
            "force_refresh": options.force_refresh,
            "model_version": options.model_version,
        },
        metadata={**job.metadata, "lead_id": lead_id},
        priority=job.priority,
        max_retries=job.max_retries,
    )
    # The answer's times are taken now, so that a stored answer can be built before the
    # append; the job's own `requested` is recorded a few milliseconds later.
    now = state.clock()
    accepted = Accepted(
        job_id=job_id,
        lead_id=lead_id,
        requested_at=now,
        estimated_completion=now + expected_wait(state.model, site_id),
        usage=decision.usage,
    )
    batch = [
        AppendTo(streams.job(job_id), [new(requested)], NO_STREAM),
        *decision.appends,
        AppendTo(
            streams.lead(site_id, lead_id), [new(EvaluationQueued(job_id=job_id))], lead.version
        ),
    ]
    return accepted, batch


async def create_generic(
    state: AppState,
    locks: SiteLocks,
    who: Principal,
    body: JobCreate,
    *,
    key: idempotency.Key | None = None,
    respond: Callable[[Accepted], dict[str, Any]],
) -> Answer:
    """`POST /api/jobs` with type `ai_evaluation`: section 1's rules, params validated (422).

    `respond` builds the generic route's 202 body from the accepted job.
    """
    try:
        params = convert(body.params, EvaluationParams)
    except ValidationFailed as exc:  # "field: why", or "why" about `params` as a whole
        field, sep, why = exc.message.partition(": ")
        raise ValidationFailed(f"params.{field}: {why}" if sep else f"params: {field}") from None
    _check_model(params.model_version, state, "params.model_version")
    options = EvaluationOptions(
        force_refresh=params.force_refresh, model_version=params.model_version
    )
    return await create_evaluation(
        state, locks, who, params.lead_id, options, key=key, respond=respond, status=202, job=body
    )
