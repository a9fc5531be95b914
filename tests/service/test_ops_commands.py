"""The evaluation commands on a memory store with a clock we move: the generic create's
params, the estimate's formula, months and their quota."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore import MemoryStore, streams
from eventstore.events import JobCompleted, JobStarted, LeadSaved
from projections.model import ReadModel
from projections.runner import ProjectionRunner
from service.app_state import AppState
from service.auth import Principal
from service.commands import JobCreate
from service.errors import ValidationFailed
from service.evaluations import (
    Accepted,
    Answer,
    EvaluationOptions,
    QuotaExceeded,
    create_evaluation,
    create_generic,
)
from service.metrics import Metrics
from service.ops_common import LeadNotFound, SiteLocks
from service.settings import Settings

pytestmark = pytest.mark.anyio

WHO = Principal("site1", "user1", "member")


def job_only(accepted: Accepted) -> dict[str, Any]:
    return {"job_id": accepted.job_id, "month": accepted.usage.month}


def data(answer: Answer) -> dict[str, Any]:
    found: dict[str, Any] = answer.body["data"]
    return found


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def make_state(clock: Clock) -> AppState:
    store = MemoryStore(clock)
    model = ReadModel()
    runner = ProjectionRunner(store, model.projections)
    return AppState(
        store=store,
        settings=Settings(),
        model=model,
        runner=runner,
        clock=clock,
        metrics=Metrics(),
    )


async def save_lead(state: AppState, lead_id: str) -> None:
    stream = streams.lead("site1", lead_id)
    fields = {"first_name": "A", "last_name": "B", "email": "a@b.c"}
    await state.store.append(stream, [LeadSaved(fields=fields)], 0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params: Object missing required field `lead_id`"),
        ({"lead_id": "a.b"}, "params.lead_id"),
        ({"lead_id": 5}, "params.lead_id"),
        ({"lead_id": "lead_1", "force_refresh": "no"}, "params.force_refresh"),
        ({"lead_id": "lead_1", "model_version": "gpt"}, "params.model_version"),
    ],
)
async def test_generic_create_validates_its_params(params: dict[str, object], field: str) -> None:
    state = await make_state(Clock(datetime(2026, 1, 5, tzinfo=UTC)))
    body = JobCreate(type="ai_evaluation", params=params)
    with pytest.raises(ValidationFailed) as caught:
        await create_generic(state, SiteLocks(), WHO, body, respond=job_only)
    assert caught.value.message.startswith(field)


async def test_generic_create_obeys_section_1() -> None:
    state = await make_state(Clock(datetime(2026, 1, 5, tzinfo=UTC)))
    body = JobCreate(
        type="ai_evaluation",
        params={"lead_id": "lead_1"},
        metadata={"case": "c1", "lead_id": "ignored"},
        priority=4,
        max_retries=5,
    )
    with pytest.raises(LeadNotFound):
        await create_generic(state, SiteLocks(), WHO, body, respond=job_only)
    await save_lead(state, "lead_1")
    answer = await create_generic(state, SiteLocks(), WHO, body, respond=job_only)
    assert answer.status == 202 and set(answer.body) == {"job_id", "month"}
    (requested,) = await state.store.read_stream(streams.job(answer.body["job_id"]))
    event = requested.event
    assert event.metadata == {"case": "c1", "lead_id": "lead_1"}  # type: ignore[union-attr]
    assert event.priority == 4 and event.max_retries == 5  # type: ignore[union-attr]
    assert answer.body["month"] == "2026-01"


async def test_estimate_is_the_average_run_times_the_queue() -> None:
    clock = Clock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    state = await make_state(clock)
    locks, options = SiteLocks(), EvaluationOptions()
    for lead, seconds in (("a", 10), ("b", 20)):
        await save_lead(state, lead)
        done = data(await create_evaluation(state, locks, WHO, lead, options))
        stream = streams.job(done["job_id"])
        await state.store.append(stream, [JobStarted(attempt=1)], 1)
        clock.now += timedelta(seconds=seconds)
        await state.store.append(stream, [JobCompleted(result={})], 2)
    for lead in ("c", "d"):
        await save_lead(state, lead)
    await create_evaluation(state, locks, WHO, "c", options)
    accepted = data(await create_evaluation(state, locks, WHO, "d", options))
    assert accepted["requested_at"] == "2026-01-05T12:00:30.000Z"
    # average (10 + 20) / 2 = 15 s, one job ahead: 15 x (1 + 1)
    assert accepted["estimated_completion"] == "2026-01-05T12:01:00.000Z"


async def test_the_quota_is_per_month_and_429_says_until_when() -> None:
    clock = Clock(datetime(2026, 1, 31, 23, 59, 0, tzinfo=UTC))
    state = await make_state(clock)
    locks = SiteLocks()
    options = EvaluationOptions(force_refresh=True)
    for n in range(21):
        await save_lead(state, f"lead_{n}")
    for n in range(20):
        await create_evaluation(state, locks, WHO, f"lead_{n}", options)
    with pytest.raises(QuotaExceeded) as caught:
        await create_evaluation(state, locks, WHO, "lead_20", options)
    assert caught.value.headers["Retry-After"] == "60"
    assert caught.value.extra["usage"] == {
        "used": 20,
        "limit": 20,
        "month": "2026-01",
        "tier": "free",
    }
    clock.now += timedelta(minutes=1)
    answer = await create_evaluation(state, locks, WHO, "lead_20", options)
    assert answer.body["usage"] == {"remaining": 19, "limit": 20, "month": "2026-02"}
