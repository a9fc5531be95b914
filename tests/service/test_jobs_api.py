"""Generic jobs (API.md section 2) through a real uvicorn, field by field."""

from __future__ import annotations

import re
import time
import uuid

import anyio
import pytest

from service import commands
from service.auth import Principal, issue_token
from tests.service.conftest import SECRET, Service

pytestmark = pytest.mark.anyio

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def create(
    svc: Service, body: dict[str, object] | None = None, site: str = "site1", user: str = "user1"
) -> str:
    headers = svc.auth(site=site, user=user)
    r = await svc.client.post("/api/jobs", json=body or {"type": "noop"}, headers=headers)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def test_create_answers_202_with_links(service: Service) -> None:
    body = {"type": "noop", "params": {"n": 1}, "metadata": {"case": "c1"}, "priority": 5}
    r = await service.client.post("/api/jobs", json=body, headers=service.auth())
    assert r.status_code == 202
    data = r.json()
    assert UUID.fullmatch(data["job_id"])
    assert data["status"] == "accepted"
    assert data["poll_url"] == f"/api/jobs/{data['job_id']}"
    assert data["events_url"] == f"/api/jobs/{data['job_id']}/events"
    assert data["message"] == f"Job accepted. Poll /api/jobs/{data['job_id']} for status."
    assert r.headers["location"] == data["poll_url"]
    assert r.headers["x-request-id"]


async def test_poll_shows_every_field(service: Service) -> None:
    job_id = await create(service, {"type": "report", "metadata": {"k": [1, 2]}, "max_retries": 2})
    r = await service.client.get(f"/api/jobs/{job_id}", headers=service.auth())
    assert r.status_code == 200
    job = r.json()
    assert job["job_id"] == job_id and job["job_type"] == "report"
    assert job["status"] == "pending" and job["user_id"] == "user1"
    assert job["metadata"] == {"k": [1, 2]}
    assert TIME.fullmatch(job["created_at"])
    for key in ("result", "error", "error_code", "started_at", "completed_at", "next_attempt_at"):
        assert key in job and job[key] is None
    assert job["progress"] == 0 and job["progress_message"] == ""
    assert job["retry_count"] == 0 and job["max_retries"] == 2
    assert r.headers["retry-after"] == "2"
    upper = await service.client.get(f"/api/jobs/{job_id.upper()}", headers=service.auth())
    assert upper.status_code == 200 and upper.json()["job_id"] == job_id


async def test_visibility_members_own_admins_site_others_nothing(service: Service) -> None:
    mine = await create(service, user="alice")
    theirs = await create(service, user="bob")
    other_site = await create(service, site="site2", user="alice")
    get = service.client.get
    assert (await get(f"/api/jobs/{mine}", headers=service.auth(user="alice"))).status_code == 200
    assert (await get(f"/api/jobs/{theirs}", headers=service.auth(user="alice"))).status_code == 404
    admin = service.auth(user="root", role="admin")
    assert (await get(f"/api/jobs/{theirs}", headers=admin)).status_code == 200
    r = await get(f"/api/jobs/{other_site}", headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "JobNotFound"
    missing = await get(f"/api/jobs/{uuid.uuid4()}", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"] == "JobNotFound"
    listed = await get("/api/jobs", headers=service.auth(user="alice"))
    assert [j["job_id"] for j in listed.json()["jobs"]] == [mine]
    listed_admin = await get("/api/jobs", headers=admin)
    assert [j["job_id"] for j in listed_admin.json()["jobs"]] == [theirs, mine]


async def test_listing_pages_newest_first_with_filters(service: Service) -> None:
    ids = [await create(service, {"type": "noop" if i % 2 else "report"}) for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await service.client.get("/api/jobs", params=params, headers=service.auth())).json()
        assert page["count"] == len(page["jobs"]) <= 3
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    reports = await service.client.get("/api/jobs?type=report", headers=service.auth())
    assert [j["job_id"] for j in reports.json()["jobs"]] == ids[::-2]
    none = await service.client.get("/api/jobs?type=nothing", headers=service.auth())
    assert none.json() == {"jobs": [], "count": 0, "next_cursor": None}
    pending = await service.client.get("/api/jobs?status=pending,failed", headers=service.auth())
    assert pending.json()["count"] == 7


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("status=done", "status"),
        ("cursor=%%%", "cursor"),
    ],
)
async def test_listing_bad_parameters_are_422_naming_them(
    service: Service, query: str, field: str
) -> None:
    r = await service.client.get(f"/api/jobs?{query}", headers=service.auth())
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"
    assert field in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"type": "noop"', 400, "InvalidJson", None),
        (b"[1, 2]", 422, "ValidationError", None),
        (b'{"type": "nope"}', 422, "ValidationError", "type"),
        (b'{"type": 5}', 422, "ValidationError", "type"),
        (b'{"type": "noop", "priority": 11}', 422, "ValidationError", "priority"),
        (b'{"type": "noop", "priority": "high"}', 422, "ValidationError", "priority"),
        (b'{"type": "noop", "max_retries": 0}', 422, "ValidationError", "max_retries"),
        (b'{"type": "noop", "params": []}', 422, "ValidationError", "params"),
        (b"", 422, "ValidationError", "type"),
    ],
)
async def test_bad_bodies_get_their_error_and_change_nothing(
    service: Service, body: bytes, status: int, code: str, field: str | None
) -> None:
    before = service.files()
    headers = {**service.auth(), "Content-Type": "application/json"}
    r = await service.client.post("/api/jobs", content=body, headers=headers)
    assert r.status_code == status, r.text
    answer = r.json()
    assert answer["success"] is False and answer["error"] == code
    assert answer["path"] == "/api/jobs" and TIME.fullmatch(answer["timestamp"])
    if field:
        assert field in answer["message"]
    assert service.files() == before


async def test_a_body_over_the_limit_is_413(service: Service) -> None:
    big = b'{"type": "noop", "params": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
    r = await service.client.post("/api/jobs", content=big, headers=service.auth())
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"


async def test_tokens_are_checked_first(service: Service) -> None:
    post = service.client.post
    assert (await post("/api/jobs", content=b"{bad")).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await post("/api/jobs", json={"type": "noop"}, headers=bad)).json()["error"] == (
        "Unauthorized"
    )
    expired = issue_token(SECRET, Principal("site1", "user1", "member"), 1, now=time.time() - 60)
    r = await post(
        "/api/jobs", json={"type": "noop"}, headers={"Authorization": f"Bearer {expired}"}
    )
    assert r.status_code == 401
    forged = issue_token(
        "another-secret-0123456789abcdef-xyz", Principal("site1", "u", "admin"), 60
    )
    r = await service.client.get("/api/jobs", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_identity_headers_must_agree_with_the_token(service: Service) -> None:
    h = service.auth()
    ok = await service.client.get("/api/jobs", headers={**h, "X-Site-Id": "site1"})
    assert ok.status_code == 200
    other = await service.client.get("/api/jobs", headers={**h, "X-Site-Id": "site2"})
    assert other.status_code == 403 and other.json()["error"] == "Forbidden"
    user = await service.client.get("/api/jobs", headers={**h, "X-User-Id": "someone"})
    assert user.status_code == 403
    bad = await service.client.get("/api/jobs", headers={**h, "X-Site-Id": "../etc"})
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidId"
    bad_json = await service.client.post(
        "/api/jobs", content=b"{", headers={**h, "X-Site-Id": "site2"}
    )
    assert bad_json.status_code == 400, "malformed JSON (400) is answered before 403"


@pytest.mark.parametrize(
    "job_id",
    ["nope", "0193-1", "../../etc/passwd", "%00", "x" * 10_000, "123e4567e89b12d3a456426614174000"],
)
async def test_malformed_job_ids_are_400(service: Service, job_id: str) -> None:
    before = service.files()
    r = await service.client.get(f"/api/jobs/{job_id}", headers=service.auth())
    assert r.status_code in (400, 404) and r.json()["error"] in ("InvalidId", "NotFound")
    if "/" not in job_id:
        assert r.status_code == 400 and r.json()["error"] == "InvalidId"
    assert service.files() == before


async def test_routes_and_methods(service: Service) -> None:
    r = await service.client.get("/api/nothing-here", headers=service.auth())
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    r = await service.client.delete("/api/jobs", headers=service.auth())
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed"
    assert (await service.client.get("/healthz")).json() == {"status": "ok"}
    ready = await service.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_retry_of_a_job_that_did_not_fail_is_409(service: Service) -> None:
    job_id = await create(service)
    r = await service.client.post(f"/api/jobs/{job_id}/retry", headers=service.auth())
    assert r.status_code == 409 and r.json()["error"] == "NotRetryable"


async def test_the_older_status_route_keeps_the_older_shapes(service: Service) -> None:
    job_id = await create(service)
    r = await service.client.get(f"/api/job-status/{job_id}", headers=service.auth())
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "queued" and body["error_message"] is None
    assert set(body) == {
        "job_id",
        "status",
        "created_at",
        "updated_at",
        "result",
        "error_message",
        "progress",
    }
    bad = await service.client.get("/api/job-status/nope", headers=service.auth())
    assert bad.status_code == 400
    assert bad.json()["error"] == "Invalid job_id format (must be UUID)"
    assert set(bad.json()) == {"error", "timestamp", "path"}
    missing = await service.client.get(f"/api/job-status/{uuid.uuid4()}", headers=service.auth())
    assert missing.status_code == 404 and missing.json()["error"] == "Job not found"
    anon = await service.client.get(f"/api/job-status/{job_id}")
    assert anon.status_code == 401 and anon.json()["error"] == "Unauthorized"


async def test_usage_defaults_and_month_validation(service: Service) -> None:
    r = await service.client.get("/api/usage", headers=service.auth())
    body = r.json()
    assert body["used"] == 0 and body["limit"] == 20 and body["remaining"] == 20
    assert body["tier"] == "free" and re.fullmatch(r"\d{4}-\d\d", body["month"])
    for month in ("2026-13", "26-01", "2026-1", "x"):
        bad = await service.client.get(f"/api/usage?month={month}", headers=service.auth())
        assert bad.status_code == 422 and "month" in bad.json()["message"]


async def test_cancel_a_pending_job_at_once_and_again(service: Service) -> None:
    job_id = await create(service)
    r = await service.client.post(f"/api/jobs/{job_id}/cancel", headers=service.auth())
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    again = await service.client.post(f"/api/jobs/{job_id}/cancel", headers=service.auth())
    assert again.status_code == 202 and again.json()["status"] == "cancelled"
    events = await service.store.read_stream(f"job:{job_id}")
    assert [e.type for e in events] == ["requested", "cancelled"]
    legacy = await service.client.get(f"/api/job-status/{job_id}", headers=service.auth())
    assert legacy.json()["status"] == "failed"
    assert legacy.json()["error_message"] == "Job cancelled"


async def test_cancel_a_running_job_asks_its_handler(service: Service) -> None:
    from eventstore.events import JobCompleted, JobStarted

    job_id = await create(service)
    await service.store.append(f"job:{job_id}", [JobStarted(attempt=1, worker_id="w1")], 1)
    r = await service.client.post(f"/api/jobs/{job_id}/cancel", headers=service.auth())
    body = r.json()
    assert r.status_code == 202 and body["status"] == "running" and body["cancel_requested"]
    await service.store.append(f"job:{job_id}", [JobCompleted(result={"ok": True})], 3)
    done = await service.client.post(f"/api/jobs/{job_id}/cancel", headers=service.auth())
    assert done.status_code == 409 and done.json()["error"] == "NotCancellable"
    with anyio.fail_after(5):  # the read model follows the feed: a moment behind a direct append
        while (got := await _get(service, job_id))["status"] != "completed":  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert got["result"] == {"ok": True} and got["progress"] == 100


async def test_cancel_answers_what_it_asked_even_if_the_handler_stops_at_once(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is the job just after the request to stop: a handler that stops in the
    same instant (its `cancelled` appended before the route answers) does not change it."""
    from eventstore import AppendTo, new
    from eventstore.events import JobCancelled, JobCancelRequested, JobStarted
    from eventstore.records import RecordedEvent

    job_id = await create(service)
    await service.store.append(f"job:{job_id}", [JobStarted(attempt=1, worker_id="w1")], 1)
    real = service.store.append_many

    async def worker_stops_at_once(batch: list[AppendTo]) -> list[list[RecordedEvent]]:
        recorded = await real(batch)
        if any(isinstance(e.event, JobCancelRequested) for group in recorded for e in group):
            stream, version = batch[0].stream, recorded[0][-1].version
            await real([AppendTo(stream, [new(JobCancelled(by="system"))], version)])
        return recorded

    monkeypatch.setattr(service.store, "append_many", worker_stops_at_once)
    r = await service.client.post(f"/api/jobs/{job_id}/cancel", headers=service.auth())
    body = r.json()
    assert r.status_code == 202, body
    assert body["status"] == "running" and body["cancel_requested"] is True
    events = await service.store.read_stream(f"job:{job_id}")
    assert [e.type for e in events] == ["requested", "started", "cancel_requested", "cancelled"]


async def _get(service: Service, job_id: str) -> dict[str, object]:
    r = await service.client.get(f"/api/jobs/{job_id}", headers=service.auth())
    body: dict[str, object] = r.json()
    return body


async def test_prefer_wait_holds_a_poll_until_the_job_changes(service: Service) -> None:
    import anyio

    from eventstore.events import JobStarted

    job_id = await create(service)
    headers = {**service.auth(), "Prefer": "wait=5"}

    async def start_soon() -> None:
        await anyio.sleep(0.3)
        await service.store.append(f"job:{job_id}", [JobStarted(attempt=1)], 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(start_soon)
        t0 = anyio.current_time()
        r = await service.client.get(f"/api/jobs/{job_id}", headers=headers, timeout=10)
        took = anyio.current_time() - t0
    assert r.json()["status"] == "running"
    assert r.headers["preference-applied"] == "wait=5"
    assert 0.25 <= took < 4

    t0 = anyio.current_time()
    r = await service.client.get(
        f"/api/jobs/{job_id}", headers={**service.auth(), "Prefer": "wait=1"}, timeout=10
    )
    assert 0.9 <= anyio.current_time() - t0 < 3, "nothing changed: held for the whole wait"
    assert r.headers["preference-applied"] == "wait=1"
    capped = await service.client.get(
        f"/api/jobs/{job_id}", headers={**service.auth(), "Prefer": "wait=0"}
    )
    assert capped.headers["preference-applied"] == "wait=0"


async def test_prefer_wait_on_a_final_job_answers_at_once_capped_at_30(service: Service) -> None:
    import anyio

    job_id = await create(service)
    await service.client.post(f"/api/jobs/{job_id}/cancel", headers=service.auth())
    t0 = anyio.current_time()
    r = await service.client.get(
        f"/api/jobs/{job_id}", headers={**service.auth(), "Prefer": "wait=100"}
    )
    assert anyio.current_time() - t0 < 1
    assert r.headers["preference-applied"] == "wait=30" and r.json()["status"] == "cancelled"


async def test_generic_route_creates_evaluation_jobs_by_section_1_rules(service: Service) -> None:
    ops = {**service.auth(), "X-Site-Id": "site1"}
    lead = {"first_name": "Ada", "last_name": "L", "email": "ada@example.com"}
    assert (
        await service.client.put("/api/ops/leads/lead_1", json=lead, headers=ops)
    ).status_code == 201
    body = {"type": "ai_evaluation", "params": {"lead_id": "lead_1"}}
    r = await service.client.post("/api/jobs", json=body, headers=service.auth())
    assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
    job = (await service.client.get(r.json()["poll_url"], headers=service.auth())).json()
    assert job["job_type"] == "ai_evaluation" and job["metadata"]["lead_id"] == "lead_1"
    again = await service.client.post("/api/jobs", json=body, headers=service.auth())
    assert again.status_code == 409 and again.json()["error"] == "JobAlreadyPending"
    assert again.json()["job_id"] == r.json()["job_id"]
    missing = {"type": "ai_evaluation", "params": {"lead_id": "nobody"}}
    nf = await service.client.post("/api/jobs", json=missing, headers=service.auth())
    assert nf.status_code == 404 and nf.json()["error"] == "LeadNotFound"
    bad = await service.client.post(
        "/api/jobs", json={"type": "ai_evaluation", "params": {}}, headers=service.auth()
    )
    assert bad.status_code == 422 and "lead_id" in bad.json()["message"]
    usage = (await service.client.get("/api/usage", headers=service.auth())).json()
    assert usage["used"] == 1 and usage["remaining"] == 19


async def test_deeply_nested_json_is_400_not_500(service: Service) -> None:
    deep = b'{"type": "noop", "params": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    r = await service.client.post("/api/jobs", content=deep, headers=service.auth())
    assert r.status_code in (400, 413) and r.json()["error"] in ("InvalidJson", "PayloadTooLarge")


async def test_an_unexpected_error_in_creation_is_a_bare_500(
    service: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Creation bypasses Starlette's error layers (app.HotRoutes): an exception it did not
    expect still gets the envelope, no trace, the request id, and a line in the log."""

    async def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("secret internals /srv/jobtrail")

    monkeypatch.setattr(commands, "create_job", broken)
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=service.auth())
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "InternalError" and body["message"] == "Internal error."
    assert body["path"] == "/api/jobs" and "secret" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"]
    assert any("unhandled error on POST /api/jobs" in m for m in caplog.messages)
    after = await service.client.get("/api/jobs", headers=service.auth())
    assert after.status_code == 200 and after.json()["jobs"] == []


async def test_polls_route_as_starlette_would(service: Service) -> None:
    """Polls bypass Starlette's router (app.HotRoutes): the paths around them still get
    the router's answers, and a poll's own errors the envelope."""
    job_id = await create(service)
    auth = service.auth()
    assert (await service.client.get(f"/api/jobs/{job_id}", headers=auth)).status_code == 200
    assert (await service.client.get(f"/api/jobs/{job_id.upper()}", headers=auth)).json()[
        "job_id"
    ] == job_id
    head = await service.client.head(f"/api/jobs/{job_id}", headers=auth)
    assert head.status_code == 200 and head.content == b""
    for path in ("/api/jobs/", f"/api/jobs/{job_id}/", f"/api/jobs/{job_id}/x"):
        r = await service.client.get(path, headers=auth)
        assert (r.status_code, r.json()["error"]) == (404, "NotFound"), path
    r = await service.client.put(f"/api/jobs/{job_id}", headers=auth)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = await service.client.get("/api/jobs/abc%2Fdef", headers=auth)
    assert (r.status_code, r.json()["error"]) == (400, "InvalidId")
    r = await service.client.get(f"/api/jobs/{uuid.uuid4()}", headers=auth)
    assert (r.status_code, r.json()["error"]) == (404, "JobNotFound")
    assert r.json()["path"].startswith("/api/jobs/") and r.headers["x-request-id"]
    r = await service.client.get(f"/api/jobs/{job_id}")
    assert (r.status_code, r.json()["error"]) == (401, "Unauthorized")
