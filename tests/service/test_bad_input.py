"""Malformed and hostile input in every position: each gets its documented status and code.

Ids in every path and header position, malformed JSON, wrong types, impossible dates,
negative numbers, bodies over the limits, wrong methods and unknown routes. No answer is a
500 or shows a stack trace, and the data directory is byte for byte as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

import anyio
import httpx
import msgspec
import pytest

from service import schemas
from tests.service.conftest import Service
from tests.service.test_ops_api import LEAD

pytestmark = pytest.mark.anyio

LIMIT = 20  # seconds any one request may take
MISSING_JOB = str(uuid.uuid4())
LEGACY_400 = "Invalid job_id format (must be UUID)"

Headers = Mapping[str, str | bytes | None]


@dataclass(frozen=True)
class Case:
    """A request and the status and error code it must get (`names`: the field a 422 names).

    Headers default to a member's token for site1, X-Site-Id on the ops routes, X-User-Id
    on the evaluation create and the admin's token on the quota route; a header given as
    None is not sent.
    """

    method: str
    url: str
    status: int
    code: str
    body: bytes | None = None
    headers: Headers = field(default_factory=dict)
    names: str | None = None


@dataclass(frozen=True)
class World:
    job: str  # a pending noop job of user1
    evaluation: str  # a pending evaluation job of lead_1


async def build_world(svc: Service) -> World:
    r = await svc.client.post("/api/jobs", json={"type": "noop"}, headers=svc.auth())
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    ops = {**svc.auth(), "X-Site-Id": "site1", "X-User-Id": "user1"}
    r = await svc.client.put("/api/ops/leads/lead_1", json=LEAD, headers=ops)
    assert r.status_code == 201, r.text
    r = await svc.client.post("/api/ops/leads/lead_1/ai-evaluation", headers=ops)
    assert r.status_code == 201, r.text
    return World(job, r.json()["data"]["job_id"])


def default_headers(svc: Service, case: Case) -> dict[str, str]:
    path = case.url.partition("?")[0]
    admin = path.startswith("/api/ops/sites/")
    sent = svc.auth(user="root" if admin else "user1", role="admin" if admin else "member")
    if path.startswith("/api/ops/"):
        sent["X-Site-Id"] = "site1"
    if path.endswith("/ai-evaluation"):
        sent["X-User-Id"] = "user1"
    if case.body is not None:
        sent["Content-Type"] = "application/json"
    return sent


def raw_headers(headers: Mapping[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    """Headers as bytes, so that a test may send any byte a client can."""
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in headers.items()
    ]


async def send(svc: Service, case: Case) -> httpx.Response:
    sent: dict[str, str | bytes] = dict(default_headers(svc, case))
    for name, value in case.headers.items():
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    with anyio.fail_after(LIMIT):
        return await svc.client.request(
            case.method, case.url, headers=raw_headers(sent), content=case.body, timeout=LIMIT
        )


def problem(case: Case, r: httpx.Response) -> str | None:
    """What is wrong with the answer to `case`, or None."""
    where = f"{case.method} {case.url[:90]} {dict(case.headers)!r:.80}"
    if r.status_code >= 500 or "Traceback" in r.text:
        return f"{where}: {r.status_code} {r.text[:300]}"
    try:
        body = r.json()
    except ValueError:
        return f"{where}: not JSON: {r.status_code} {r.text[:200]!r}"
    got = (r.status_code, body.get("error"))
    if got != (case.status, case.code):
        return f"{where}: {got} != {(case.status, case.code)}: {body.get('message')}"
    legacy = "/api/job-status/" in case.url and case.status != 405
    try:
        msgspec.convert(body, schemas.LegacyError if legacy else schemas.Error)
    except msgspec.ValidationError as exc:
        return f"{where}: not the error envelope: {exc}"
    if "%" not in case.url and body["path"] != r.request.url.path:
        return f"{where}: path {body['path']!r} is not the request's"
    if case.names is not None and case.names not in body["message"]:
        return f"{where}: the message does not name {case.names!r}: {body['message']!r}"
    return None


async def check_all(svc: Service, cases: Iterable[Case]) -> None:
    """Send every case; all must be answered as documented, and nothing may change."""
    before = svc.files()
    problems = []
    count = 0
    for case in cases:
        count += 1
        if (found := problem(case, await send(svc, case))) is not None:
            problems.append(found)
    assert count > 0
    assert not problems, "\n".join(problems)
    assert svc.files() == before, "a refused request changed the data directory"


@pytest.fixture
async def world(service: Service) -> AsyncIterator[World]:
    yield await build_world(service)


# -- ids --------------------------------------------------------------------------------

HOSTILE = [
    "..%2F..%2Fetc",  # path traversal, the slashes encoded
    "..%2f..%2f..%2fdata",
    "%2E%2E",
    "%00",
    "a%00b",
    "a%2Fb",
    "x" * 10_000,
    "a%20b",
    "l%C3%A9ad",
    "%7Bid%7D",
]
BAD_JOB_IDS = [
    *HOSTILE,
    "nope",
    "0193-1",
    MISSING_JOB.replace("-", ""),  # no hyphens
    f"job:{MISSING_JOB}",  # a stream name
    f"{MISSING_JOB}%0A",
    f"{MISSING_JOB}x",
    MISSING_JOB.replace("-", "_"),
    "g" + MISSING_JOB[1:],  # not hex
]
BAD_IDS = [*HOSTILE, "a" * 65, "lead:1", "site1:lead_1", "a.b", "~root", "%E2%80%8B"]

JOB_ROUTES = [
    ("GET", "/api/jobs/{}"),
    ("POST", "/api/jobs/{}/retry"),
    ("POST", "/api/jobs/{}/cancel"),
    ("GET", "/api/jobs/{}/events"),
    ("GET", "/api/ops/ai-evaluation-jobs/{}"),
    ("POST", "/api/ops/ai-evaluation-jobs/{}/retry"),
    ("POST", "/api/ops/ai-evaluation-jobs/{}/cancel"),
]
PDF: Headers = {"Content-Type": "application/pdf"}
NO_CONTENT_TYPE: Headers = {"Content-Type": None}


async def test_malformed_job_ids_are_400_in_every_position(service: Service) -> None:
    await build_world(service)
    sse: Headers = {"Accept": "text/event-stream"}
    cases = [
        Case(method, path.format(bad), 400, "InvalidId")
        for bad in BAD_JOB_IDS
        for method, path in JOB_ROUTES
    ]
    cases += [
        Case("GET", f"/api/jobs/{bad}/events", 400, "InvalidId", headers=sse) for bad in BAD_JOB_IDS
    ]
    cases += [Case("GET", f"/api/job-status/{bad}", 400, LEGACY_400) for bad in BAD_JOB_IDS]
    await check_all(service, cases)


async def test_malformed_lead_document_and_site_ids_are_400(service: Service) -> None:
    await build_world(service)
    lead = msgspec.json.encode(LEAD)
    quota = b'{"limit": 5, "tier": "free"}'
    cases: list[Case] = []
    for bad in BAD_IDS:
        cases += [
            Case("GET", f"/api/ops/leads/{bad}", 400, "InvalidId"),
            Case("PUT", f"/api/ops/leads/{bad}", 400, "InvalidId", body=lead),
            Case(
                "POST",
                f"/api/ops/leads/{bad}/documents?document_type=pay_stub",
                400,
                "InvalidId",
                body=b"%PDF-1.4",
                headers=PDF,
            ),
            Case("DELETE", f"/api/ops/leads/{bad}/documents/doc_1", 400, "InvalidId"),
            Case("DELETE", f"/api/ops/leads/lead_1/documents/{bad}", 400, "InvalidId"),
            Case("POST", f"/api/ops/leads/{bad}/ai-evaluation", 400, "InvalidId"),
            Case("PUT", f"/api/ops/sites/{bad}/quota", 400, "InvalidId", body=quota),
        ]
    await check_all(service, cases)


async def test_uppercase_job_ids_are_read_as_lowercase(service: Service, world: World) -> None:
    for path, status in [
        (f"/api/jobs/{world.job.upper()}", 200),
        (f"/api/jobs/{world.job.upper()}/events", 200),
        (f"/api/job-status/{world.job.upper()}", 200),
    ]:
        r = await service.client.get(path, headers=service.auth())
        assert r.status_code == status, (path, r.text)
    r = await service.client.get(f"/api/jobs/{world.job.upper()}", headers=service.auth())
    assert r.json()["job_id"] == world.job
    ops = {**service.auth(), "X-Site-Id": "site1"}
    r = await service.client.get(
        f"/api/ops/ai-evaluation-jobs/{world.evaluation.upper()}", headers=ops
    )
    assert r.status_code == 202 and r.json()["data"]["job_id"] == world.evaluation
    await check_all(
        service,
        [
            Case("GET", f"/api/jobs/{MISSING_JOB.upper()}", 404, "JobNotFound"),
            Case("POST", f"/api/jobs/{world.job.upper()}/retry", 409, "NotRetryable"),
            Case("POST", f"/api/jobs/{MISSING_JOB.upper()}/cancel", 404, "JobNotFound"),
            Case("GET", f"/api/job-status/{MISSING_JOB.upper()}", 404, "Job not found"),
            Case("GET", f"/api/ops/ai-evaluation-jobs/{MISSING_JOB.upper()}", 404, "JobNotFound"),
        ],
    )


# -- headers ----------------------------------------------------------------------------

BAD_HEADER_IDS: list[str | bytes] = [
    "../etc",
    "..%2F..%2Fetc",
    "x" * 10_000,
    "site:1",
    "",
    "a b",
    b"s\xe9",
    "site1,site2",
]
IDENTITY_ROUTES = [
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{job}"),
    ("GET", "/api/usage"),
    ("GET", "/api/ops/leads/lead_1"),
    ("GET", "/api/ops/ai-evaluation-jobs/{evaluation}"),
    ("POST", "/api/ops/leads/lead_1/ai-evaluation"),
]


async def test_malformed_identity_headers_are_400_on_every_kind_of_route(
    service: Service, world: World
) -> None:
    cases = []
    for method, template in IDENTITY_ROUTES:
        path = template.format(job=world.job, evaluation=world.evaluation)
        for header in ("X-Site-Id", "X-User-Id"):
            for bad in BAD_HEADER_IDS:
                cases.append(Case(method, path, 400, "InvalidId", headers={header: bad}))
    legacy = f"/api/job-status/{world.job}"
    cases += [Case("GET", legacy, 400, LEGACY_400, headers={"X-Site-Id": "../etc"})]
    # the ops routes need X-Site-Id, the evaluation create also X-User-Id
    cases += [
        Case("GET", "/api/ops/leads/lead_1", 400, "MissingHeader", headers={"X-Site-Id": None}),
        Case(
            "POST",
            "/api/ops/leads/lead_1/ai-evaluation",
            400,
            "MissingHeader",
            headers={"X-User-Id": None},
        ),
        Case(
            "PUT",
            "/api/ops/sites/site1/quota",
            400,
            "MissingHeader",
            body=b'{"limit": 1, "tier": "x"}',
            headers={"X-Site-Id": None},
        ),
        Case(
            "DELETE",
            "/api/ops/leads/lead_1/documents/doc_1",
            400,
            "MissingHeader",
            headers={"X-Site-Id": None},
        ),
    ]
    await check_all(service, cases)


async def test_malformed_idempotency_keys_are_400_invalid_header(service: Service) -> None:
    await build_world(service)
    await service.client.put(
        "/api/ops/leads/lead_2", json=LEAD, headers={**service.auth(), "X-Site-Id": "site1"}
    )
    bad_keys: list[str | bytes] = ["", "k" * 256, "a\tb", b"caf\xe9", b"\x80\x81"]
    cases = []
    for key in bad_keys:
        cases += [
            Case(
                "POST",
                "/api/jobs",
                400,
                "InvalidHeader",
                b'{"type": "noop"}',
                {"Idempotency-Key": key},
            ),
            Case(
                "POST",
                "/api/ops/leads/lead_2/ai-evaluation",
                400,
                "InvalidHeader",
                headers={"Idempotency-Key": key},
            ),
        ]
    await check_all(service, cases)


async def test_hostile_optional_headers_are_ignored(service: Service, world: World) -> None:
    """Prefer, Last-Event-ID and Accept values that mean nothing change nothing: no 500."""
    before = service.files()
    ops = {**service.auth(), "X-Site-Id": "site1"}
    prefers: list[str | bytes] = [b"wait=\xb2", b"wait=\xef\xbc\x91", "wait=-1", "wait=1.5"]
    for prefer in [*prefers, "wait", "=", "wait=x", "wait=" + "x" * 5000]:
        for path, headers in [
            (f"/api/ops/ai-evaluation-jobs/{world.evaluation}", ops),
            (f"/api/jobs/{world.job}", service.auth()),
        ]:
            with anyio.fail_after(5):
                sent = raw_headers({**headers, "Prefer": prefer})
                r = await service.client.get(path, headers=sent)
            assert r.status_code in (200, 202), (path, prefer, r.text)
            assert "preference-applied" not in r.headers, (path, prefer)
    # a number of any length is a whole number above 30: read as 30, and a final job
    # is answered at once
    await service.client.post(f"/api/jobs/{world.job}/cancel", headers=service.auth())
    await service.client.post(f"/api/ops/ai-evaluation-jobs/{world.evaluation}/cancel", headers=ops)
    before = service.files()
    for path, headers in [
        (f"/api/ops/ai-evaluation-jobs/{world.evaluation}", ops),
        (f"/api/jobs/{world.job}", service.auth()),
    ]:
        for n in ["9" * 10, "9" * 5000, "0" * 20 + "31"]:
            with anyio.fail_after(5):
                r = await service.client.get(path, headers={**headers, "Prefer": f"wait={n}"})
            assert r.status_code == 200 and r.headers["preference-applied"] == "wait=30", path
    history = f"/api/jobs/{world.job}/events"
    for accept in ["text/event-stream;q=0", "*/*", "application/json", "text/html", "q=;;,"]:
        r = await service.client.get(history, headers={**service.auth(), "Accept": accept})
        assert r.status_code == 200 and r.json()["events"][0]["type"] == "requested", accept
    assert service.files() == before


# -- bodies -----------------------------------------------------------------------------

JSON_ROUTES = [
    ("POST", "/api/jobs"),
    ("PUT", "/api/ops/leads/lead_1"),
    ("POST", "/api/ops/leads/lead_1/ai-evaluation"),
    ("PUT", "/api/ops/sites/site1/quota"),
]
MALFORMED_JSON = [
    b"{",
    b"{'type': 'noop'}",
    b'{"type": "noop",}',
    b"nul",
    b'{"type": "noop"} trailing',
    b"\xff\xfe{}",
    b'{"type": "no\xffop"}',
    b"[" * 100_000,
    b'{"a": ' * 50_000,
]


async def test_malformed_json_is_400_on_every_json_route(service: Service) -> None:
    await build_world(service)
    cases = [
        Case(method, path, 400, "InvalidJson", body)
        for body in MALFORMED_JSON
        for method, path in JSON_ROUTES
    ]
    await check_all(service, cases)


def invalid(method: str, path: str, body: object, names: str) -> Case:
    return Case(method, path, 422, "ValidationError", msgspec.json.encode(body), names=names)


async def test_bodies_that_fail_validation_are_422_naming_the_field(service: Service) -> None:
    await build_world(service)
    job = ("POST", "/api/jobs")
    lead = ("PUT", "/api/ops/leads/lead_2")
    evaluation = ("POST", "/api/ops/leads/lead_1/ai-evaluation")
    quota = ("PUT", "/api/ops/sites/site1/quota")
    noop = {"type": "noop"}
    cases = [
        invalid(*job, {"type": 5}, "type"),
        invalid(*job, {}, "type"),
        invalid(*job, {"type": "no_such_type"}, "type"),
        invalid(*job, {**noop, "priority": "high"}, "priority"),
        invalid(*job, {**noop, "priority": True}, "priority"),
        invalid(*job, {**noop, "priority": -11}, "priority"),
        invalid(*job, {**noop, "priority": 10**30}, "priority"),
        invalid(*job, {**noop, "max_retries": 0}, "max_retries"),
        invalid(*job, {**noop, "max_retries": -3}, "max_retries"),
        invalid(*job, {**noop, "max_retries": 1.5}, "max_retries"),
        invalid(*job, {**noop, "params": []}, "params"),
        invalid(*job, {**noop, "params": None}, "params"),
        invalid(*job, {**noop, "metadata": "x"}, "metadata"),
        invalid(*job, {**noop, "metadata": {"n": [1, 2**64]}}, "metadata.n[1]"),
        invalid(*job, {**noop, "params": {"n": -(2**63) - 1}}, "params.n"),
        invalid(
            *job, {"type": "ai_evaluation", "params": {"lead_id": "lead_1", "n": 2**70}}, "params.n"
        ),
        invalid(*job, [noop], "object"),
        invalid(*job, [], "object"),
        invalid(*job, "noop", "object"),
        invalid(*job, 5, "object"),
        invalid(*job, {"type": "ai_evaluation", "params": {}}, "lead_id"),
        invalid(*job, {"type": "ai_evaluation", "params": {"lead_id": "../x"}}, "params.lead_id"),
        invalid(*job, {"type": "ai_evaluation", "params": {"lead_id": ["lead_1"]}}, "lead_id"),
        invalid(
            *job,
            {"type": "ai_evaluation", "params": {"lead_id": "lead_1", "force_refresh": "yes"}},
            "params.force_refresh",
        ),
        invalid(
            *job,
            {"type": "ai_evaluation", "params": {"lead_id": "lead_1", "model_version": "gpt"}},
            "params.model_version",
        ),
        invalid(*lead, {**LEAD, "first_name": 5}, "first_name"),
        invalid(*lead, {**LEAD, "first_name": ""}, "first_name"),
        invalid(*lead, {**LEAD, "move_in_date": "2026-02-30"}, "move_in_date"),
        invalid(*lead, {**LEAD, "move_in_date": "2026-13-01"}, "move_in_date"),
        invalid(*lead, {**LEAD, "move_in_date": "next week"}, "move_in_date"),
        invalid(*lead, {**LEAD, "move_in_date": 20260301}, "move_in_date"),
        invalid(*lead, {**LEAD, "monthly_rent": -1}, "monthly_rent"),
        invalid(*lead, {**LEAD, "monthly_rent": "1850"}, "monthly_rent"),
        invalid(*lead, {**LEAD, "email": "not-an-address"}, "email"),
        invalid(*lead, {**LEAD, "email": None}, "email"),
        invalid(*lead, {"first_name": "Ada", "last_name": "L"}, "email"),
        invalid(*lead, {**LEAD, "extra": 2**64}, "extra"),
        invalid(*lead, [LEAD], "body"),
        invalid(*lead, "Ada", "body"),
        invalid(*lead, None, "body"),
        invalid(*evaluation, {"force_refresh": "yes"}, "force_refresh"),
        invalid(*evaluation, {"force_refresh": 1}, "force_refresh"),
        invalid(*evaluation, {"model_version": "gpt-9"}, "model_version"),
        invalid(*evaluation, {"model_version": 5}, "model_version"),
        invalid(*evaluation, [], "body"),
        invalid(*evaluation, [{"force_refresh": True}], "body"),
        invalid(*evaluation, 5, "body"),
        invalid(*evaluation, None, "body"),
        invalid(*quota, {"limit": -1, "tier": "free"}, "limit"),
        invalid(*quota, {"limit": "5", "tier": "free"}, "limit"),
        invalid(*quota, {"limit": 1.5, "tier": "free"}, "limit"),
        invalid(*quota, {"limit": 2**63, "tier": "free"}, "limit"),
        invalid(*quota, {"limit": 5}, "tier"),
        invalid(*quota, {"limit": 5, "tier": ""}, "tier"),
        invalid(*quota, {"limit": 5, "tier": 7}, "tier"),
        invalid(*quota, [], "body"),
        invalid(*quota, None, "body"),
    ]
    await check_all(service, cases)


async def test_query_parameters_that_fail_validation_are_422_naming_them(
    service: Service,
) -> None:
    await build_world(service)
    q = "?document_type="
    upload = "/api/ops/leads/lead_1/documents"
    cases = [
        Case("GET", f"/api/usage?month={month}", 422, "ValidationError", names="month")
        for month in ["2026-13", "2026-00", "2026-1", "26-01", "2026-02-30", "0000-01", "%00"]
    ]
    cases += [
        Case("GET", f"/api/jobs?{query}", 422, "ValidationError", names=name)
        for query, name in [
            ("limit=-1", "limit"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=abc", "limit"),
            ("limit=1e3", "limit"),
            ("limit=%C2%B2", "limit"),  # a superscript two: a digit to str.isdigit
            ("limit=" + "1" * 5000, "limit"),
            ("status=done", "status"),
            ("status=pending,,failed", "status"),
            ("cursor=abc", "cursor"),
            ("cursor=%00", "cursor"),
            ("cursor=" + "A" * 10_000, "cursor"),
        ]
    ]
    cases += [
        Case("POST", f"{upload}{q}{t}", 422, "ValidationError", b"%PDF", PDF, "document_type")
        for t in ["payslip", "..%2Fetc", "%00", "PAY_STUB", "x" * 10_000]
    ]
    cases += [
        Case(
            "POST",
            f"{upload}?document_type=other",
            422,
            "ValidationError",
            b"MZ",
            h,
            "Content-Type",
        )
        for h in [
            {"Content-Type": "application/x-msdownload"},
            {"Content-Type": "text/plain-not"},
            {"Content-Type": ""},
            NO_CONTENT_TYPE,
        ]
    ]
    cases += [
        Case("POST", f"{upload}{q}pay_stub", 422, "ValidationError", b"", PDF, "empty"),
    ]
    await check_all(service, cases)


async def _chunks(size: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        part = min(chunk, size - sent)
        yield b" " * part
        sent += part


async def test_bodies_over_the_limits_are_413(service: Service) -> None:
    await build_world(service)
    json_limit = service.settings.max_json_bytes
    big = b'{"type": "noop", "pad": "' + b"a" * json_limit + b'"}'
    cases = [Case(method, path, 413, "PayloadTooLarge", big) for method, path in JSON_ROUTES]
    doc_limit = service.settings.max_document_bytes
    upload = "/api/ops/leads/lead_1/documents?document_type=pay_stub"
    cases.append(Case("POST", upload, 413, "PayloadTooLarge", b"%" * (doc_limit + 1), PDF))
    await check_all(service, cases)
    # without a Content-Length: refused as soon as the stream passes the limit
    before = service.files()
    for method, path in JSON_ROUTES:
        headers = default_headers(service, Case(method, path, 0, "", b""))
        r = await service.client.request(
            method, path, content=_chunks(json_limit + 1), headers=headers, timeout=LIMIT
        )
        assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge"), path
    headers = {**service.auth(), "X-Site-Id": "site1", "Content-Type": "application/pdf"}
    r = await service.client.post(
        upload, content=_chunks(doc_limit + 1), headers=headers, timeout=LIMIT
    )
    assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")
    assert service.files() == before, "a refused upload left something behind"


# -- routes and methods ---------------------------------------------------------------


async def test_wrong_methods_are_405_and_unknown_routes_404(service: Service, world: World) -> None:
    wrong_methods = [
        ("PATCH", "/api/jobs"),
        ("DELETE", "/api/jobs"),
        ("PUT", f"/api/jobs/{world.job}"),
        ("DELETE", f"/api/jobs/{world.job}"),
        ("GET", f"/api/jobs/{world.job}/retry"),
        ("PUT", f"/api/jobs/{world.job}/cancel"),
        ("POST", f"/api/jobs/{world.job}/events"),
        ("POST", f"/api/job-status/{world.job}"),
        ("POST", "/api/usage"),
        ("POST", "/api/events"),
        ("POST", "/api/ops/leads/lead_1"),
        ("DELETE", "/api/ops/leads/lead_1"),
        ("GET", "/api/ops/leads/lead_1/documents"),
        ("GET", "/api/ops/leads/lead_1/documents/doc_1"),
        ("GET", "/api/ops/leads/lead_1/ai-evaluation"),
        ("DELETE", f"/api/ops/ai-evaluation-jobs/{world.evaluation}"),
        ("GET", f"/api/ops/ai-evaluation-jobs/{world.evaluation}/retry"),
        ("GET", "/api/ops/sites/site1/quota"),
        ("POST", "/healthz"),
        ("PUT", "/openapi.json"),
        ("OPTIONS", "/api/jobs"),
    ]
    unknown = [
        "/api/nothing",
        "/api/jobs/",
        f"/api/jobs/{world.job}/",
        f"/api/jobs/{world.job}/x/y",
        "/API/JOBS",
        "/api/ops",
        "/api/ops/leads",
        "/api/ops/leads/",
        "/api/ops/leads//documents",
        "/api/ops/sites/site1",
        "/" + "a" * 10_000,
        "/%00",
        "/..%2F..%2Fetc%2Fpasswd",
    ]
    cases = []
    no_token: Headers = {"Authorization": None}
    for headers in ({}, no_token):  # the route is checked before the token
        cases += [Case(m, p, 405, "MethodNotAllowed", headers=headers) for m, p in wrong_methods]
        cases += [
            Case(m, p, 404, "NotFound", headers=headers) for p in unknown for m in ("GET", "POST")
        ]
    await check_all(service, cases)
    r = await service.client.request("PATCH", "/api/jobs", headers=service.auth())
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


async def test_an_empty_body_where_one_is_optional_counts_as_no_body(service: Service) -> None:
    ops = {**service.auth(), "X-Site-Id": "site1", "X-User-Id": "user1"}
    for n, (content_type, body) in enumerate(
        [("application/json", b""), ("text/plain", b""), ("application/json", b" \r\n\t")]
    ):
        lead = f"lead_{n}"
        r = await service.client.put(f"/api/ops/leads/{lead}", json=LEAD, headers=ops)
        assert r.status_code == 201
        r = await service.client.post(
            f"/api/ops/leads/{lead}/ai-evaluation",
            content=body,
            headers={**ops, "Content-Type": content_type},
        )
        assert r.status_code == 201, (content_type, body, r.text)
