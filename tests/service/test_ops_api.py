"""Evaluation jobs on the ops routes (API.md section 1) through a real uvicorn.

The worker is not part of these tests: a job's later events are appended to its stream
directly, as a worker would append them.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest

from eventstore import streams
from eventstore.events import (
    EvaluationQueued,
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRetried,
    JobStarted,
)
from service import schemas
from service.auth import Role
from service.evaluations import seconds_to_next_month
from tests.service.conftest import Service

pytestmark = pytest.mark.anyio

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEAD: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone": "+44 20 7946 0000",
    "move_in_date": "2026-03-01",
    "monthly_rent": 1850.5,
}
RESULT: dict[str, Any] = {
    "id": "eval_0123456789abcdef",
    "score": 82,
    "label": "A",
    "recommendation": "approve",
    "summary": "Strong candidate with verified income.",
    "risk_flags": ["employment_duration_short"],
    "fraud_signals": [],
    "evaluated_at": "2026-01-05T10:00:12.000Z",
    "model_version": "jobtrail-rules-1",
}


def ops(
    svc: Service,
    site: str = "site1",
    user: str = "user1",
    role: Role = "member",
    *,
    with_user: bool = False,
) -> dict[str, str]:
    """Headers of an ops request: the token and X-Site-Id (and X-User-Id) that match it."""
    headers = {**svc.auth(site, user, role), "X-Site-Id": site}
    if with_user:
        headers["X-User-Id"] = user
    return headers


async def put_lead(svc: Service, lead_id: str, site: str = "site1", **fields: Any) -> None:
    r = await svc.client.put(
        f"/api/ops/leads/{lead_id}", json={**LEAD, **fields}, headers=ops(svc, site)
    )
    assert r.status_code in (200, 201), r.text


async def create(
    svc: Service, lead_id: str, body: Any = None, site: str = "site1", user: str = "user1"
) -> httpx.Response:
    headers = ops(svc, site, user, with_user=True)
    url = f"/api/ops/leads/{lead_id}/ai-evaluation"
    if body is None:
        return await svc.client.post(url, headers=headers)
    return await svc.client.post(url, json=body, headers=headers)


async def created(svc: Service, lead_id: str, body: Any = None, site: str = "site1") -> str:
    r = await create(svc, lead_id, body, site)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["data"]["job_id"]
    return job_id


async def append(svc: Service, job_id: str, *events: Event) -> None:
    """Append as the worker would: at the job stream's current version."""
    stream = streams.job(job_id)
    await svc.store.append(stream, list(events), await svc.store.stream_version(stream))


async def poll(svc: Service, job_id: str, site: str = "site1", user: str = "user1") -> Any:
    return await svc.client.get(
        f"/api/ops/ai-evaluation-jobs/{job_id}", headers=ops(svc, site, user)
    )


def when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def test_create_answers_201_field_by_field(service: Service) -> None:
    await put_lead(service, "lead_1")
    r = await create(service, "lead_1")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"success", "data", "usage"} and body["success"] is True
    data = body["data"]
    assert set(data) == {"job_id", "lead_id", "status", "requested_at", "estimated_completion"}
    assert UUID.fullmatch(data["job_id"]) and data["lead_id"] == "lead_1"
    assert data["status"] == "pending"
    assert TIME.fullmatch(data["requested_at"]) and TIME.fullmatch(data["estimated_completion"])
    eta = when(data["estimated_completion"]) - when(data["requested_at"])
    assert eta == timedelta(seconds=30), "no history and nothing ahead: the 30 s default"
    month = datetime.now(UTC).strftime("%Y-%m")
    assert body["usage"] == {"remaining": 19, "limit": 20, "month": month}
    assert r.headers["location"] == f"/api/ops/ai-evaluation-jobs/{data['job_id']}"
    (requested,) = await service.store.read_stream(streams.job(data["job_id"]))
    event = requested.event
    assert requested.type == "requested" and event.job_type == "ai_evaluation"  # type: ignore[union-attr]
    assert event.metadata == {"lead_id": "lead_1"}  # type: ignore[union-attr]
    assert event.params == {  # type: ignore[union-attr]
        "lead_id": "lead_1",
        "force_refresh": False,
        "model_version": "auto",
    }
    assert event.user_id == "user1"  # type: ignore[union-attr]
    assert await service.store.stream_version(streams.usage("site1", month)) == 1
    usage = await service.client.get("/api/usage", headers=service.auth())
    assert usage.json()["used"] == 1 and usage.json()["remaining"] == 19


async def test_estimate_counts_the_queue_ahead_and_recent_durations(service: Service) -> None:
    for lead in ("a", "b", "c"):
        await put_lead(service, lead)
    await created(service, "a")
    await created(service, "b")
    data = (await create(service, "c")).json()["data"]
    eta = when(data["estimated_completion"]) - when(data["requested_at"])
    assert eta == timedelta(seconds=90), "two ahead at the default 30 s each, then this one"
    await append(service, data["job_id"], JobStarted(attempt=1), JobCompleted(result=RESULT))
    await put_lead(service, "d")
    quick = (await create(service, "d")).json()["data"]
    eta = when(quick["estimated_completion"]) - when(quick["requested_at"])
    assert eta < timedelta(seconds=3), "a run of milliseconds replaces the default"


async def test_poll_shows_each_state_in_its_form(service: Service) -> None:
    await put_lead(service, "lead_1")
    job_id = await created(service, "lead_1")
    r = await poll(service, job_id)
    assert r.status_code == 202 and r.headers["retry-after"] == "2"
    pending = r.json()["data"]
    assert pending["job_id"] == job_id and pending["lead_id"] == "lead_1"
    assert pending["status"] == "pending" and TIME.fullmatch(pending["requested_at"])
    assert "retry_count" not in pending and "next_attempt_at" not in pending

    await append(service, job_id, JobStarted(attempt=1, worker_id="w1"))
    await append(service, job_id, JobProgressed(progress=40, message="Reading documents"))
    r = await poll(service, job_id)
    assert r.status_code == 202 and r.headers["retry-after"] == "2"
    running = r.json()["data"]
    assert running["status"] == "processing" and running["lead_id"] == "lead_1"
    assert TIME.fullmatch(running["started_at"])
    assert running["progress_message"] == "Reading documents"
    assert isinstance(running["duration_ms"], int) and running["duration_ms"] >= 0
    assert running["cancel_requested"] is False

    await append(service, job_id, JobCompleted(result=RESULT))
    r = await poll(service, job_id)
    assert r.status_code == 200 and "retry-after" not in r.headers
    done = r.json()["data"]
    assert done["status"] == "completed" and done["lead_id"] == "lead_1"
    assert TIME.fullmatch(done["completed_at"])
    assert isinstance(done["duration_ms"], int) and done["duration_ms"] >= 0
    assert done["evaluation"] == RESULT


async def test_a_failed_job_and_its_manual_retry(service: Service) -> None:
    await put_lead(service, "lead_1")
    job_id = await created(service, "lead_1")
    await append(
        service,
        job_id,
        JobStarted(attempt=1),
        JobFailed(error_code="ResourceNotFound", error_message="No documents", attempt=1),
    )
    r = await poll(service, job_id)
    assert r.status_code == 200 and "retry-after" not in r.headers
    failed = r.json()["data"]
    assert failed["status"] == "failed" and failed["lead_id"] == "lead_1"
    assert failed["error_code"] == "ResourceNotFound" and failed["error_message"] == "No documents"
    assert failed["can_retry"] is True
    assert failed["retry_count"] == 1 and failed["max_retries"] == 3
    month = datetime.now(UTC).strftime("%Y-%m")
    retry = await service.client.post(
        f"/api/ops/ai-evaluation-jobs/{job_id}/retry", headers=ops(service, user="someone_else")
    )
    assert retry.status_code == 202 and retry.headers["retry-after"] == "2"
    again = retry.json()["data"]
    assert again["status"] == "pending" and again["job_id"] == job_id
    assert again["lead_id"] == "lead_1" and "retry_count" not in again
    assert await service.store.stream_version(streams.usage("site1", month)) == 1, "no quota"
    twice = await service.client.post(
        f"/api/ops/ai-evaluation-jobs/{job_id}/retry", headers=ops(service)
    )
    assert twice.status_code == 409 and twice.json()["error"] == "NotRetryable"


async def test_waiting_for_an_automatic_retry_shows_the_count(service: Service) -> None:
    await put_lead(service, "lead_1")
    job_id = await created(service, "lead_1")
    due = datetime.now(UTC) + timedelta(seconds=30)
    await append(
        service,
        job_id,
        JobStarted(attempt=1),
        JobFailed(error_code="ModelTimeout", error_message="slow", attempt=1, will_retry=True),
        JobRetried(next_attempt_at=due),
    )
    r = await poll(service, job_id)
    assert r.status_code == 202
    data = r.json()["data"]
    assert data["status"] == "pending" and data["retry_count"] == 1
    assert TIME.fullmatch(data["next_attempt_at"])
    assert abs(when(data["next_attempt_at"]) - due) < timedelta(milliseconds=2)


async def test_retry_while_another_job_of_the_lead_is_pending_is_409(service: Service) -> None:
    await put_lead(service, "lead_1")
    first = await created(service, "lead_1")
    await append(
        service,
        first,
        JobStarted(attempt=1),
        JobFailed(error_code="ResourceNotFound", error_message="No documents", attempt=1),
    )
    second = await created(service, "lead_1")  # the first failed: a new job may be created
    r = await service.client.post(
        f"/api/ops/ai-evaluation-jobs/{first}/retry", headers=ops(service)
    )
    assert r.status_code == 409 and r.json()["error"] == "JobAlreadyPending"
    assert r.json()["job_id"] == second
    pending = await service.client.post(
        f"/api/ops/ai-evaluation-jobs/{second}/retry", headers=ops(service)
    )
    assert pending.status_code == 409 and pending.json()["error"] == "NotRetryable"


async def test_creates_and_retries_of_a_lead_are_serialized_by_its_stream(
    service: Service,
) -> None:
    """Each appends `evaluation_queued` with the lead version it read, across processes too;
    the generic retry route keeps the one-evaluation-per-lead rule as well."""
    await put_lead(service, "lead_1")
    lead = streams.lead("site1", "lead_1")
    first = await created(service, "lead_1")
    await append(
        service,
        first,
        JobStarted(attempt=1),
        JobFailed(error_code="ResourceNotFound", error_message="No documents", attempt=1),
    )
    second = await created(service, "lead_1")
    guards = [
        e.event
        for e in await service.store.read_stream(lead)
        if isinstance(e.event, EvaluationQueued)
    ]
    assert guards == [EvaluationQueued(job_id=first), EvaluationQueued(job_id=second)]
    admin = service.auth(role="admin")
    r = await service.client.post(f"/api/jobs/{first}/retry", headers=admin)
    assert r.status_code == 409 and r.json()["error"] == "JobAlreadyPending"
    await append(service, second, JobCancelled(by="user1"))
    version = await service.store.stream_version(lead)
    r = await service.client.post(f"/api/jobs/{first}/retry", headers=admin)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    (last,) = await service.store.read_stream(lead, version + 1)
    assert last.event == EvaluationQueued(job_id=first, manual=True)


async def test_cancel_pending_at_once_and_running_on_request(service: Service) -> None:
    for lead in ("a", "b"):
        await put_lead(service, lead)
    pending = await created(service, "a")
    url = f"/api/ops/ai-evaluation-jobs/{pending}/cancel"
    r = await service.client.post(url, headers=ops(service, user="other_operator"))
    assert r.status_code == 202 and "retry-after" not in r.headers
    data = r.json()["data"]
    assert data["status"] == "cancelled" and data["lead_id"] == "a"
    assert TIME.fullmatch(data["cancelled_at"])
    again = await service.client.post(url, headers=ops(service))
    assert again.status_code == 202 and again.json()["data"]["status"] == "cancelled"
    polled = await poll(service, pending)
    assert polled.status_code == 200 and polled.json()["data"]["status"] == "cancelled"

    running = await created(service, "b")
    await append(service, running, JobStarted(attempt=1))
    url = f"/api/ops/ai-evaluation-jobs/{running}/cancel"
    r = await service.client.post(url, headers=ops(service))
    assert r.status_code == 202 and r.headers["retry-after"] == "2"
    data = r.json()["data"]
    assert data["status"] == "processing" and data["cancel_requested"] is True
    await append(service, running, JobCompleted(result=RESULT))
    done = await service.client.post(url, headers=ops(service))
    assert done.status_code == 409 and done.json()["error"] == "NotCancellable"


async def test_every_operator_of_the_site_sees_its_jobs_and_no_one_else(
    service: Service,
) -> None:
    await put_lead(service, "lead_1")
    job_id = await created(service, "lead_1")
    assert (await poll(service, job_id, user="colleague")).status_code == 202
    for site in ("site2",):
        r = await poll(service, job_id, site=site)
        assert r.status_code == 404 and r.json()["error"] == "JobNotFound"
    missing = await poll(service, str(uuid.uuid4()))
    assert missing.status_code == 404 and missing.json()["error"] == "JobNotFound"
    upper = await poll(service, job_id.upper())
    assert upper.status_code == 202 and upper.json()["data"]["job_id"] == job_id
    bad = await poll(service, "job_abc123")
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidId"
    no_site = await service.client.get(
        f"/api/ops/ai-evaluation-jobs/{job_id}", headers=service.auth()
    )
    assert no_site.status_code == 400 and no_site.json()["error"] == "MissingHeader"
    wrong_site = await service.client.get(
        f"/api/ops/ai-evaluation-jobs/{job_id}", headers={**service.auth(), "X-Site-Id": "site2"}
    )
    assert wrong_site.status_code == 403 and wrong_site.json()["error"] == "Forbidden"


async def test_a_job_of_another_type_is_404_on_every_evaluation_route(service: Service) -> None:
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=service.auth())
    job_id = r.json()["job_id"]
    base = f"/api/ops/ai-evaluation-jobs/{job_id}"
    answers = [
        await service.client.get(base, headers=ops(service)),
        await service.client.post(f"{base}/retry", headers=ops(service)),
        await service.client.post(f"{base}/cancel", headers=ops(service)),
    ]
    for answer in answers:
        assert answer.status_code == 404 and answer.json()["error"] == "JobNotFound"
    assert [e.type for e in await service.store.read_stream(streams.job(job_id))] == ["requested"]


async def test_create_rules_404_409_and_force_refresh(service: Service) -> None:
    missing = await create(service, "nobody")
    assert missing.status_code == 404 and missing.json()["error"] == "LeadNotFound"
    await put_lead(service, "theirs", site="site2")
    other_site = await create(service, "theirs")
    assert other_site.status_code == 404 and other_site.json()["error"] == "LeadNotFound"

    await put_lead(service, "lead_1")
    job_id = await created(service, "lead_1")
    for body in (None, {"force_refresh": True}):
        busy = await create(service, "lead_1", body)
        assert busy.status_code == 409 and busy.json()["error"] == "JobAlreadyPending"
        assert busy.json()["job_id"] == job_id and busy.json()["success"] is False
    await append(service, job_id, JobStarted(attempt=1))
    assert (await create(service, "lead_1")).json()["error"] == "JobAlreadyPending"
    await append(service, job_id, JobCompleted(result=RESULT))
    done = await create(service, "lead_1", {"force_refresh": False})
    assert done.status_code == 409 and done.json()["error"] == "AlreadyEvaluated"
    assert done.json()["evaluation_id"] == RESULT["id"] and done.json()["job_id"] == job_id
    fresh = await create(service, "lead_1", {"force_refresh": True, "model_version": "auto"})
    assert fresh.status_code == 201
    usage = (await service.client.get("/api/usage", headers=service.auth())).json()
    assert usage["used"] == 2, "rejected creates use no quota"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_version": "gpt-9"}, "model_version"),
        ({"model_version": 1}, "model_version"),
        ({"force_refresh": "yes"}, "force_refresh"),
        ({"force_refresh": 1}, "force_refresh"),
        ([{"force_refresh": True}], "body"),
        ("force", "body"),
    ],
)
async def test_bad_create_bodies_are_422_and_change_nothing(
    service: Service, body: Any, field: str
) -> None:
    await put_lead(service, "lead_1")
    before = service.files()
    r = await create(service, "lead_1", body)
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"
    assert field in r.json()["message"]
    assert service.files() == before


async def test_an_empty_body_is_no_body_and_the_rules_model_is_accepted(service: Service) -> None:
    for lead in ("a", "b"):
        await put_lead(service, lead)
    headers = {**ops(service, with_user=True), "Content-Type": "application/json"}
    r = await service.client.post("/api/ops/leads/a/ai-evaluation", content=b"", headers=headers)
    assert r.status_code == 201, r.text
    r = await create(service, "b", {"model_version": "jobtrail-rules-1"})
    assert r.status_code == 201, r.text


async def test_create_needs_both_identity_headers(service: Service) -> None:
    await put_lead(service, "lead_1")
    url = "/api/ops/leads/lead_1/ai-evaluation"
    for missing in ("X-Site-Id", "X-User-Id"):
        headers = {k: v for k, v in ops(service, with_user=True).items() if k != missing}
        r = await service.client.post(url, headers=headers)
        assert r.status_code == 400 and r.json()["error"] == "MissingHeader"
        assert missing in r.json()["message"]
    other_user = {**ops(service, with_user=True), "X-User-Id": "someone"}
    assert (await service.client.post(url, headers=other_user)).status_code == 403


async def test_quota_is_429_with_usage_and_retry_after(service: Service) -> None:
    admin = ops(service, user="boss", role="admin")
    r = await service.client.put(
        "/api/ops/sites/site1/quota", json={"limit": 2, "tier": "starter"}, headers=admin
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    assert r.status_code == 200, r.text
    msgspec.convert(r.json(), schemas.UsageAnswer)  # as /openapi.json documents it
    assert r.json() == {
        "used": 0,
        "limit": 2,
        "remaining": 2,
        "month": month,
        "tier": "starter",
    }
    for lead in ("a", "b", "c"):
        await put_lead(service, lead)
    assert (await create(service, "a")).json()["usage"] == {
        "remaining": 1,
        "limit": 2,
        "month": month,
    }
    await created(service, "b")
    before = service.files()
    r = await create(service, "c")
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "QuotaExceeded" and body["success"] is False
    assert body["message"] == "Monthly evaluation limit (2) reached for this site."
    assert body["usage"] == {"used": 2, "limit": 2, "month": month, "tier": "starter"}
    expected = seconds_to_next_month(datetime.now(UTC))
    assert abs(int(r.headers["retry-after"]) - expected) <= 5
    assert service.files() == before
    lowered = await service.client.put(
        "/api/ops/sites/site1/quota", json={"limit": 1, "tier": "starter"}, headers=admin
    )
    assert lowered.json()["used"] == 2 and lowered.json()["remaining"] == 0
    raised = await service.client.put(
        "/api/ops/sites/site1/quota", json={"limit": 3, "tier": "pro"}, headers=admin
    )
    assert raised.json()["remaining"] == 1
    assert (await create(service, "c")).status_code == 201
    (setting,) = (await service.store.read_stream(streams.site("site1")))[-1:]
    assert setting.event.by == "boss" and setting.event.from_month == month  # type: ignore[union-attr]


def test_seconds_to_next_month() -> None:
    assert seconds_to_next_month(datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)) == 1
    assert seconds_to_next_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == 3600
    assert seconds_to_next_month(datetime(2026, 2, 1, tzinfo=UTC)) == 28 * 86400


@pytest.mark.parametrize(
    ("who", "site", "body", "status", "field"),
    [
        ("member", "site1", {"limit": 5, "tier": "pro"}, 403, None),
        ("admin", "site2", {"limit": 5, "tier": "pro"}, 403, None),
        ("admin", "site1", {"limit": -1, "tier": "pro"}, 422, "limit"),
        ("admin", "site1", {"limit": 1.5, "tier": "pro"}, 422, "limit"),
        ("admin", "site1", {"limit": "5", "tier": "pro"}, 422, "limit"),
        ("admin", "site1", {"limit": 5}, 422, "tier"),
        ("admin", "site1", {"limit": 5, "tier": ""}, 422, "tier"),
        ("admin", "site1", [5, "pro"], 422, "body"),
        ("admin", "bad.site", {"limit": 5, "tier": "pro"}, 400, None),
    ],
)
async def test_quota_setting_is_for_the_sites_admins(
    service: Service, who: Role, site: str, body: Any, status: int, field: str | None
) -> None:
    before = service.files()
    r = await service.client.put(
        f"/api/ops/sites/{site}/quota", json=body, headers=ops(service, role=who)
    )
    assert r.status_code == status, r.text
    if field:
        assert field in r.json()["message"]
    assert service.files() == before


async def test_50_concurrent_creates_never_pass_the_limit(service: Service) -> None:
    leads = [f"lead_{i}" for i in range(50)]
    for lead in leads:
        await put_lead(service, lead)
    answers = await asyncio.gather(*(create(service, lead) for lead in leads))
    counts = Counter(r.status_code for r in answers)
    assert counts == {201: 20, 429: 30}, counts
    month = datetime.now(UTC).strftime("%Y-%m")
    assert await service.store.stream_version(streams.usage("site1", month)) == 20
    remaining = sorted(r.json()["usage"]["remaining"] for r in answers if r.status_code == 201)
    assert remaining == list(range(20)), "each accepted create took one unit"


async def test_concurrent_creates_for_one_lead_accept_one(service: Service) -> None:
    await put_lead(service, "lead_1")
    answers = await asyncio.gather(*(create(service, "lead_1") for _ in range(10)))
    counts = Counter(r.status_code for r in answers)
    assert counts == {201: 1, 409: 9}, counts
    (winner,) = [r.json()["data"]["job_id"] for r in answers if r.status_code == 201]
    assert {r.json()["job_id"] for r in answers if r.status_code == 409} == {winner}


async def test_prefer_wait_holds_until_the_job_moves(service: Service) -> None:
    await put_lead(service, "lead_1")
    job_id = await created(service, "lead_1")
    headers = {**ops(service), "Prefer": "wait=1"}
    url = f"/api/ops/ai-evaluation-jobs/{job_id}"
    started = time.monotonic()
    r = await service.client.get(url, headers=headers)
    assert time.monotonic() - started >= 0.9
    assert r.status_code == 202 and r.headers["preference-applied"] == "wait=1"

    async def start_soon() -> None:
        await asyncio.sleep(0.3)
        await append(service, job_id, JobStarted(attempt=1))

    started = time.monotonic()
    waiting = asyncio.ensure_future(
        service.client.get(url, headers={**ops(service), "Prefer": "respond-async, wait=100"})
    )
    await start_soon()
    r = await waiting
    assert time.monotonic() - started < 5
    assert r.json()["data"]["status"] == "processing"
    assert r.headers["preference-applied"] == "wait=30"
    await append(service, job_id, JobCompleted(result=RESULT))
    started = time.monotonic()
    final = await service.client.get(url, headers={**ops(service), "Prefer": "wait=30"})
    assert final.status_code == 200 and time.monotonic() - started < 1


async def test_a_repeated_idempotency_key_gets_the_first_answer(service: Service) -> None:
    for lead in ("a", "b"):
        await put_lead(service, lead)
    url = "/api/ops/leads/a/ai-evaluation"
    headers = {**ops(service, with_user=True), "Idempotency-Key": "create-a-1"}
    answers = await asyncio.gather(
        *(service.client.post(url, json={"force_refresh": True}, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in answers} == {201}
    assert len({r.text for r in answers}) == 1, "every repeat gets the first answer"
    later = await service.client.post(url, json={"force_refresh": True}, headers=headers)
    assert later.status_code == 201 and later.json() == answers[0].json()
    usage = (await service.client.get("/api/usage", headers=service.auth())).json()
    assert usage["used"] == 1, "a repeat uses no quota"
    other = await service.client.post(url, json={"force_refresh": False}, headers=headers)
    assert other.status_code == 422 and other.json()["error"] == "IdempotencyKeyReused"
    bad = {**headers, "Idempotency-Key": "x" * 256}
    r = await service.client.post("/api/ops/leads/b/ai-evaluation", headers=bad)
    assert r.status_code == 400 and r.json()["error"] == "InvalidHeader"
    refused = {**headers, "Idempotency-Key": "busy-b"}
    first = await create(service, "b")
    assert first.status_code == 201
    busy = await service.client.post("/api/ops/leads/b/ai-evaluation", headers=refused)
    assert busy.status_code == 409, "a rejected request is not remembered"
