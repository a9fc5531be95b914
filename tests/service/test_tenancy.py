"""Tenancy over every route of API.md sections 1-3, from one route table.

Another site's job, lead or document answers exactly as one that does not exist; an
identity header that contradicts the token is 403; a missing, malformed, expired or
forged token is 401; members see their own generic jobs, every user of a site sees its
evaluation jobs on the ops routes, admins see the whole site. Refused requests change
nothing in the data directory. Adding a route means adding a row to ROUTES.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from eventstore import streams
from eventstore.events import JobCompleted, JobStarted
from service.auth import Principal, Role, issue_token
from tests.service.conftest import SECRET, Service
from tests.service.test_ops_api import LEAD, RESULT

pytestmark = pytest.mark.anyio

LIMIT = 10  # seconds any one request may take
PDF = b"%PDF-1.4 pay stub"


@dataclass(frozen=True)
class Row:
    """One route: how to call it, and what it answers for a thing that does not exist.

    `path` and `body` may name `{job}` (a generic job), `{eval}` (an evaluation job),
    `{lead}`, `{doc}` and `{site}`; `missing` is the error code of a truly missing thing,
    None when the route names nothing of a site.
    """

    name: str
    method: str
    path: str
    missing: str | None = None
    ops: bool = False  # needs X-Site-Id
    user_header: bool = False  # needs X-User-Id as well
    body: str | None = None
    content_type: str = "application/json"
    stream: bool = False  # asks for Server-Sent Events
    endless: bool = False  # a stream that never ends on its own: error answers only
    legacy: bool = False  # answers errors as {"error": <text>, ...}


ROUTES = [
    Row("create job", "POST", "/api/jobs", body='{"type": "noop"}'),
    Row(
        "create evaluation (generic)",
        "POST",
        "/api/jobs",
        "LeadNotFound",
        body='{"type": "ai_evaluation", "params": {"lead_id": "{lead}"}}',
    ),
    Row("list jobs", "GET", "/api/jobs"),
    Row("poll job", "GET", "/api/jobs/{job}", "JobNotFound"),
    Row("retry job", "POST", "/api/jobs/{job}/retry", "JobNotFound"),
    Row("cancel job", "POST", "/api/jobs/{job}/cancel", "JobNotFound"),
    Row("job events json", "GET", "/api/jobs/{job}/events", "JobNotFound"),
    Row("job events sse", "GET", "/api/jobs/{job}/events", "JobNotFound", stream=True),
    Row("site events sse", "GET", "/api/events", stream=True, endless=True),
    Row("job status", "GET", "/api/job-status/{job}", "Job not found", legacy=True),
    Row("usage", "GET", "/api/usage"),
    Row("put lead", "PUT", "/api/ops/leads/{lead}", ops=True, body="LEAD"),
    Row("get lead", "GET", "/api/ops/leads/{lead}", "LeadNotFound", ops=True),
    Row(
        "upload document",
        "POST",
        "/api/ops/leads/{lead}/documents?document_type=pay_stub",
        "LeadNotFound",
        ops=True,
        body="PDF",
        content_type="application/pdf",
    ),
    Row(
        "delete document",
        "DELETE",
        "/api/ops/leads/{lead}/documents/{doc}",
        "LeadNotFound",
        ops=True,
    ),
    Row(
        "create evaluation",
        "POST",
        "/api/ops/leads/{lead}/ai-evaluation",
        "LeadNotFound",
        ops=True,
        user_header=True,
    ),
    Row("poll evaluation", "GET", "/api/ops/ai-evaluation-jobs/{eval}", "JobNotFound", ops=True),
    Row(
        "retry evaluation",
        "POST",
        "/api/ops/ai-evaluation-jobs/{eval}/retry",
        "JobNotFound",
        ops=True,
    ),
    Row(
        "cancel evaluation",
        "POST",
        "/api/ops/ai-evaluation-jobs/{eval}/cancel",
        "JobNotFound",
        ops=True,
    ),
    Row(
        "set quota",
        "PUT",
        "/api/ops/sites/{site}/quota",
        ops=True,
        body='{"limit": 5, "tier": "free"}',
    ),
]
NAMED = [r for r in ROUTES if r.missing is not None]
GENERIC_JOB_ROUTES = [r for r in NAMED if "{job}" in r.path]
EVALUATION_ROUTES = [r for r in NAMED if "{eval}" in r.path]


@dataclass(frozen=True)
class Caller:
    site: str
    user: str
    role: Role = "member"


OWNER = Caller("site1", "alice")
MEMBER = Caller("site1", "bob")
ADMIN = Caller("site1", "root", "admin")
STRANGER = Caller("site2", "root2", "admin")  # sees all of site2, nothing of site1


@dataclass(frozen=True)
class World:
    """Things of site1, all final so that a request about them changes nothing."""

    ids: dict[str, str]

    def missing(self) -> dict[str, str]:
        """Ids of the same forms that name nothing."""
        return {
            **self.ids,
            "job": str(uuid.uuid4()),
            "eval": str(uuid.uuid4()),
            "lead": "nobody",
            "doc": "doc_0000000000000000",
        }


async def complete(svc: Service, job_id: str, result: dict[str, Any]) -> None:
    stream = streams.job(job_id)
    events = [JobStarted(attempt=1), JobCompleted(result=result)]
    await svc.store.append(stream, events, await svc.store.stream_version(stream))


async def build_world(svc: Service) -> World:
    """site1: alice's completed noop job, lead_1 with a document, its completed evaluation."""
    owner = headers(svc, ROUTES[0], OWNER)
    r = await svc.client.post("/api/jobs", json={"type": "noop"}, headers=owner)
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    await complete(svc, job, {"ok": True})
    ops = {**owner, "X-Site-Id": "site1", "X-User-Id": "alice"}
    r = await svc.client.put("/api/ops/leads/lead_1", json=LEAD, headers=ops)
    assert r.status_code == 201, r.text
    pdf = {**ops, "Content-Type": "application/pdf"}
    r = await svc.client.post(
        "/api/ops/leads/lead_1/documents?document_type=pay_stub", content=PDF, headers=pdf
    )
    assert r.status_code == 201, r.text
    doc = r.json()["data"]["id"]
    r = await svc.client.post("/api/ops/leads/lead_1/ai-evaluation", headers=ops)
    assert r.status_code == 201, r.text
    evaluation = r.json()["data"]["job_id"]
    await complete(svc, evaluation, RESULT)
    return World({"job": job, "eval": evaluation, "lead": "lead_1", "doc": doc, "site": "site1"})


def token(caller: Caller, secret: str = SECRET, ttl: int = 3600, now: float | None = None) -> str:
    return issue_token(secret, Principal(caller.site, caller.user, caller.role), ttl, now)


def headers(svc: Service, row: Row, caller: Caller, **extra: str) -> dict[str, str]:
    """The headers a well-behaved client of `caller` sends on `row`."""
    sent = {"Authorization": f"Bearer {token(caller)}"}
    if row.ops:
        sent["X-Site-Id"] = caller.site
    if row.user_header:
        sent["X-User-Id"] = caller.user
    if row.body is not None:
        sent["Content-Type"] = row.content_type
    if row.stream:
        sent["Accept"] = "text/event-stream"
    sent.update(extra)
    return {k: v for k, v in sent.items() if v}


async def call(
    svc: Service,
    row: Row,
    ids: dict[str, str],
    sent: dict[str, str],
    *,
    query: dict[str, str] | None = None,
) -> httpx.Response:
    """One request of `row` about `ids`; a stream is read to its end (it must end)."""
    path = row.path.format(**ids)
    content = None
    if row.body == "LEAD":
        content = json.dumps(LEAD).encode()
    elif row.body == "PDF":
        content = PDF
    elif row.body is not None:
        content = row.body.replace("{lead}", ids.get("lead", "")).encode()
    with anyio.fail_after(LIMIT):
        r = await svc.client.request(
            row.method, path, headers=sent, content=content, params=query, timeout=LIMIT
        )
    assert r.status_code < 500 and "Traceback" not in r.text, (row.name, r.text)
    return r


def refusal(r: httpx.Response) -> tuple[int, str, str | None, list[str]]:
    """What a client can tell of an error: status, code, message, the body's fields."""
    body = r.json()
    return r.status_code, body["error"], body.get("message"), sorted(body)


def expected_error(row: Row, status: int) -> str:
    if row.legacy:
        return {401: "Unauthorized", 403: "Forbidden", 404: "Job not found"}[status]
    return {401: "Unauthorized", 403: "Forbidden"}[status]


# -- another site's things are not there ---------------------------------------------


@pytest.mark.parametrize("row", NAMED, ids=lambda r: r.name)
async def test_another_sites_thing_answers_as_a_missing_one(service: Service, row: Row) -> None:
    world = await build_world(service)
    before = service.files()
    foreign = await call(service, row, world.ids, headers(service, row, STRANGER))
    missing = await call(service, row, world.missing(), headers(service, row, STRANGER))
    assert refusal(foreign) == refusal(missing), row.name
    assert foreign.status_code == 404 and foreign.json()["error"] == row.missing
    assert foreign.json()["path"] == row.path.format(**world.ids).partition("?")[0]
    assert service.files() == before, f"{row.name}: a refused request changed the data"
    # the ids are real: the site's own admin gets an answer about them, not a 404
    own = await call(service, row, world.ids, headers(service, row, ADMIN))
    assert own.status_code != 404, (row.name, own.text)


async def test_a_site_cannot_set_another_sites_quota(service: Service) -> None:
    row = next(r for r in ROUTES if r.name == "set quota")
    before = service.files()
    r = await call(service, row, {"site": "site1"}, headers(service, row, STRANGER))
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    member = await call(service, row, {"site": "site1"}, headers(service, row, OWNER))
    assert (member.status_code, member.json()["error"]) == (403, "Forbidden")
    assert service.files() == before
    own = await call(service, row, {"site": "site1"}, headers(service, row, ADMIN))
    assert own.status_code == 200 and own.json()["limit"] == 5
    usage = await service.client.get("/api/usage", headers=headers(service, ROUTES[0], STRANGER))
    assert usage.json()["limit"] == 20, "site2 keeps the default"


async def test_two_sites_each_have_their_own_lead_of_one_id(service: Service) -> None:
    world = await build_world(service)
    put = next(r for r in ROUTES if r.name == "put lead")
    theirs = {**LEAD, "first_name": "Grace"}
    r = await service.client.put(
        "/api/ops/leads/lead_1", json=theirs, headers=headers(service, put, STRANGER)
    )
    assert r.status_code == 201, "site2's lead_1 is a new lead, not site1's"
    assert r.json()["data"]["documents"] == [] and r.json()["data"]["ai_score"] is None
    get = next(r for r in ROUTES if r.name == "get lead")
    mine = await call(service, get, world.ids, headers(service, get, ADMIN))
    assert mine.json()["data"]["first_name"] == "Ada"
    assert [d["id"] for d in mine.json()["data"]["documents"]] == [world.ids["doc"]]
    # site1's document on site2's lead_1 is as missing as a document that never was
    delete = next(r for r in ROUTES if r.name == "delete document")
    before = service.files()
    foreign = await call(service, delete, world.ids, headers(service, delete, STRANGER))
    missing_doc = {**world.ids, "doc": "doc_0000000000000000"}
    missing = await call(service, delete, missing_doc, headers(service, delete, STRANGER))
    assert refusal(foreign) == refusal(missing)
    assert foreign.json()["error"] == "DocumentNotFound"
    assert service.files() == before


async def test_site_events_never_show_another_sites_jobs(service: Service) -> None:
    """The feed from position 0 for site2's admin replays nothing of site1."""
    world = await build_world(service)
    sent = headers(service, ROUTES[0], STRANGER)
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=sent)
    marker = r.json()["job_id"]
    seen: list[str] = []
    sse = {**sent, "Accept": "text/event-stream", "Last-Event-ID": "0"}
    with anyio.fail_after(LIMIT):
        async with service.client.stream("GET", "/api/events", headers=sse) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:])["job_id"])
                    if seen[-1] == marker:
                        break
    assert seen == [marker]
    assert world.ids["job"] not in seen


async def test_idempotency_keys_are_kept_per_site_and_user(service: Service) -> None:
    key = {"Idempotency-Key": "same-key-1"}
    row = ROUTES[0]
    first = await service.client.post(
        "/api/jobs", json={"type": "noop"}, headers=headers(service, row, OWNER, **key)
    )
    again = await service.client.post(
        "/api/jobs", json={"type": "noop"}, headers=headers(service, row, OWNER, **key)
    )
    assert first.json()["job_id"] == again.json()["job_id"]
    for caller in (STRANGER, MEMBER, Caller("site2", "alice")):
        other = await service.client.post(
            "/api/jobs", json={"type": "noop"}, headers=headers(service, row, caller, **key)
        )
        assert other.status_code == 202
        assert other.json()["job_id"] != first.json()["job_id"], caller


# -- headers that contradict the token ----------------------------------------------


@pytest.mark.parametrize("row", ROUTES, ids=lambda r: r.name)
async def test_identity_headers_that_contradict_the_token_are_403(
    service: Service, row: Row
) -> None:
    world = await build_world(service)
    before = service.files()
    contradictions = [
        {"X-Site-Id": "site2"},
        {"X-Site-Id": "SITE1"},  # ids are compared as they are: another site
        {"X-User-Id": "mallory"},
        {"X-Site-Id": "site2", "X-User-Id": "root"},
    ]
    for extra in contradictions:
        r = await call(service, row, world.ids, headers(service, row, ADMIN, **extra))
        assert (r.status_code, r.json()["error"]) == (403, expected_error(row, 403)), (
            row.name,
            extra,
        )
    assert service.files() == before, f"{row.name}: a refused request changed the data"


# -- tokens -------------------------------------------------------------------------

OTHER_SECRET = "another-secret-for-jobtrail-tests-012345"


def bad_credentials() -> dict[str, dict[str, str]]:
    valid = token(ADMIN)
    header, payload, signature = valid.split(".")
    return {
        "none": {},
        "empty bearer": {"Authorization": "Bearer"},
        "not a token": {"Authorization": "Bearer not-a-token"},
        "another scheme": {"Authorization": f"Basic {valid}"},
        "no scheme": {"Authorization": valid},
        "tampered": {"Authorization": f"Bearer {header}.{payload}x.{signature}"},
        "unsigned": {"Authorization": f"Bearer {header}.{payload}."},
        "expired": {"Authorization": f"Bearer {token(ADMIN, ttl=60, now=time.time() - 120)}"},
        "another secret": {"Authorization": f"Bearer {token(ADMIN, secret=OTHER_SECRET)}"},
    }


@pytest.mark.parametrize("row", ROUTES, ids=lambda r: r.name)
async def test_a_missing_or_bad_token_is_401(service: Service, row: Row) -> None:
    world = await build_world(service)
    before = service.files()
    for kind, credentials in bad_credentials().items():
        sent = {**headers(service, row, ADMIN), **credentials}
        if "Authorization" not in credentials:
            del sent["Authorization"]
        r = await call(service, row, world.ids, sent)
        assert (r.status_code, r.json()["error"]) == (401, expected_error(row, 401)), (
            row.name,
            kind,
        )
    # a token in the query counts on the two stream routes only, and the header wins
    good = token(ADMIN)
    bare = headers(service, row, ADMIN)
    del bare["Authorization"]
    if not row.path.endswith("events"):
        r = await call(service, row, world.ids, bare, query={"access_token": good})
        assert r.status_code == 401, row.name
    forged = {**bare, "Authorization": f"Bearer {token(ADMIN, secret=OTHER_SECRET)}"}
    r = await call(service, row, world.ids, forged, query={"access_token": good})
    assert r.status_code == 401, row.name
    assert service.files() == before, f"{row.name}: a refused request changed the data"


# -- who within a site sees what ------------------------------------------------------


@pytest.mark.parametrize("row", GENERIC_JOB_ROUTES, ids=lambda r: r.name)
async def test_members_see_only_their_own_generic_jobs(service: Service, row: Row) -> None:
    world = await build_world(service)  # the job is alice's
    before = service.files()
    others = await call(service, row, world.ids, headers(service, row, MEMBER))
    missing = await call(service, row, world.missing(), headers(service, row, MEMBER))
    assert refusal(others) == refusal(missing), row.name
    assert others.status_code == 404
    assert service.files() == before
    for caller in (OWNER, ADMIN):
        r = await call(service, row, world.ids, headers(service, row, caller))
        assert r.status_code != 404, (row.name, caller, r.text)


@pytest.mark.parametrize("row", EVALUATION_ROUTES, ids=lambda r: r.name)
async def test_every_user_of_the_site_sees_its_evaluation_jobs(service: Service, row: Row) -> None:
    world = await build_world(service)  # the evaluation job is alice's
    expected = {"poll evaluation": 200, "retry evaluation": 409, "cancel evaluation": 409}
    for caller in (OWNER, MEMBER, ADMIN):
        r = await call(service, row, world.ids, headers(service, row, caller))
        assert r.status_code == expected[row.name], (row.name, caller, r.text)
        if r.status_code == 200:
            assert r.json()["data"]["job_id"] == world.ids["eval"]
    # a generic job's id names no evaluation job, whoever asks
    generic = {**world.ids, "eval": world.ids["job"]}
    missing = await call(service, row, world.missing(), headers(service, row, ADMIN))
    r = await call(service, row, generic, headers(service, row, ADMIN))
    assert refusal(r) == refusal(missing) and r.status_code == 404


async def test_listings_show_members_their_own_and_admins_the_site(service: Service) -> None:
    world = await build_world(service)
    row = next(r for r in ROUTES if r.name == "list jobs")
    bobs = await service.client.post(
        "/api/jobs", json={"type": "noop"}, headers=headers(service, ROUTES[0], MEMBER)
    )
    await service.client.post(
        "/api/jobs", json={"type": "noop"}, headers=headers(service, ROUTES[0], STRANGER)
    )

    async def listed(caller: Caller) -> set[str]:
        r = await call(service, row, world.ids, headers(service, row, caller))
        assert r.status_code == 200
        return {j["job_id"] for j in r.json()["jobs"]}

    alices = {world.ids["job"], world.ids["eval"]}
    assert await listed(OWNER) == alices
    assert await listed(MEMBER) == {bobs.json()["job_id"]}
    assert await listed(ADMIN) == alices | {bobs.json()["job_id"]}
    assert world.ids["job"] not in await listed(STRANGER)
    # a member's generic view of an evaluation job is the generic rule: their own only
    evaluation = f"/api/jobs/{world.ids['eval']}"
    r = await service.client.get(evaluation, headers=headers(service, row, MEMBER))
    assert r.status_code == 404
    r = await service.client.get(evaluation, headers=headers(service, row, OWNER))
    assert r.status_code == 200 and r.json()["job_type"] == "ai_evaluation"
    # usage is the site's, the same for every user of it
    usage = next(r for r in ROUTES if r.name == "usage")
    seen = [
        (await call(service, usage, world.ids, headers(service, usage, c))).json()["used"]
        for c in (OWNER, MEMBER, ADMIN, STRANGER)
    ]
    assert seen == [1, 1, 1, 0]
