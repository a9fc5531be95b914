"""A pruned job through the real service: 410 Gone where its owner looks, 404 elsewhere.

Jobs are made with the API and finished by cancelling them (no worker runs), then
`jobtrail prune` runs as a command on the same data directory, beside the live app.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from service.cli import main
from tests.service.conftest import Service

pytestmark = pytest.mark.anyio


async def _job(service: Service, **who: Any) -> str:
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=service.auth(**who))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def _prune(service: Service, job_id: str) -> int:
    """Run the command, then wait until the app's read model has folded its tombstone.

    Polls answer from the read model, which follows the feed a few milliseconds behind
    another process's (here: another store's) append, as for any write.
    """
    argv = ["prune", "--older-than", "0s", "--data", str(service.data)]
    code: int = await anyio.to_thread.run_sync(main, argv)
    admin = service.auth("site1", role="admin")
    with anyio.fail_after(10):
        while (await service.client.get(f"/api/jobs/{job_id}", headers=admin)).status_code != 410:  # noqa: ASYNC110, E501 - the app offers no event to wait on
            await anyio.sleep(0.02)
    return code


async def test_a_pruned_job_is_gone_for_those_who_saw_it(service: Service) -> None:
    c = service.client
    pruned = await _job(service)
    kept = await _job(service)  # pending: not finished, never pruned
    r = await c.post(f"/api/jobs/{pruned}/cancel", headers=service.auth())
    assert r.status_code == 202 and r.json()["status"] == "cancelled"

    assert await _prune(service, pruned) == 0

    for method, path in [
        ("GET", f"/api/jobs/{pruned}"),
        ("GET", f"/api/jobs/{pruned}/events"),
        ("POST", f"/api/jobs/{pruned}/cancel"),
        ("POST", f"/api/jobs/{pruned}/retry"),
    ]:
        r = await c.request(method, path, headers=service.auth())
        assert r.status_code == 410, (method, path, r.text)
        body = r.json()
        assert body["error"] == "Gone" and body["success"] is False and body["path"] == path
    admin = await c.get(f"/api/jobs/{pruned}", headers=service.auth(role="admin"))
    assert admin.status_code == 410
    # The older clients' route says what the older store said: not found.
    legacy = await c.get(f"/api/job-status/{pruned}", headers=service.auth())
    assert legacy.status_code == 404 and legacy.json()["error"] == "Job not found"
    # Nobody who could not see the job learns that it existed.
    other_member = await c.get(f"/api/jobs/{pruned}", headers=service.auth(user="user2"))
    other_site = await c.get(f"/api/jobs/{pruned}", headers=service.auth("site2", role="admin"))
    assert other_member.status_code == 404 and other_site.status_code == 404
    assert other_site.json()["error"] == "JobNotFound"
    as_evaluation = await c.get(
        f"/api/ops/ai-evaluation-jobs/{pruned}",
        headers={**service.auth(role="admin"), "X-Site-Id": "site1"},
    )
    assert as_evaluation.status_code == 404  # a noop job is no evaluation job
    # The job that was not finished is untouched; the listing no longer has the pruned one.
    assert (await c.get(f"/api/jobs/{kept}", headers=service.auth())).status_code == 200
    listing = (await c.get("/api/jobs", headers=service.auth())).json()
    assert [j["job_id"] for j in listing["jobs"]] == [kept]


async def test_a_pruned_evaluation_is_gone_and_its_lead_and_usage_stay(service: Service) -> None:
    c = service.client
    ops = {**service.auth(role="admin"), "X-Site-Id": "site1"}
    lead = {"first_name": "Ada", "last_name": "L", "email": "ada@example.com"}
    assert (await c.put("/api/ops/leads/lead_1", json=lead, headers=ops)).status_code == 201
    r = await c.post("/api/ops/leads/lead_1/ai-evaluation", headers={**ops, "X-User-Id": "user1"})
    assert r.status_code == 201, r.text
    job_id = r.json()["data"]["job_id"]
    r = await c.post(f"/api/ops/ai-evaluation-jobs/{job_id}/cancel", headers=ops)
    assert r.status_code in (200, 202), r.text
    usage_before = (await c.get("/api/usage", headers=service.auth())).json()
    assert usage_before["used"] == 1

    assert await _prune(service, job_id) == 0

    poll = await c.get(f"/api/ops/ai-evaluation-jobs/{job_id}", headers=ops)
    assert poll.status_code == 410 and poll.json()["error"] == "Gone"
    assert (await c.get(f"/api/jobs/{job_id}", headers=service.auth())).status_code == 410
    assert (await c.get("/api/usage", headers=service.auth())).json() == usage_before
    got = await c.get("/api/ops/leads/lead_1", headers=ops)
    assert got.status_code == 200 and got.json()["data"]["email"] == "ada@example.com"
    # The lead can be evaluated again: its pruned job is no pending one.
    again = await c.post(
        "/api/ops/leads/lead_1/ai-evaluation", headers={**ops, "X-User-Id": "user1"}
    )
    assert again.status_code == 201, again.text


async def test_the_openapi_document_names_410_on_the_job_routes(service: Service) -> None:
    doc = (await service.client.get("/openapi.json")).json()
    for path in [
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/events",
        "/api/jobs/{job_id}/cancel",
        "/api/ops/ai-evaluation-jobs/{job_id}",
    ]:
        for operation in doc["paths"][path].values():
            assert "410" in operation["responses"], path
    legacy = doc["paths"]["/api/job-status/{job_id}"]["get"]["responses"]
    assert "410" not in legacy and "pruned" in legacy["404"]["description"]
