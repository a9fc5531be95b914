"""schemathesis against the live server's own /openapi.json: no 500s, documented answers.

Every operation of the document runs, as site1's admin, with generated ids (mostly things
that do not exist) and with the ids of real things of site1: leads with documents, and
generic and evaluation jobs in every state (pending, running, waiting for a retry,
completed, failed, cancelled), so that each state's answer meets its schema. Valid input
(positive) everywhere, invalid input (negative) where an operation takes any. Checks:
`not_a_server_error`, `status_code_conformance`, `response_schema_conformance`.
`/api/events` is left out: an endless Server-Sent-Event stream. Hypothesis is seeded
(JOBTRAIL_SCHEMATHESIS_SEED; printed, and named in a failure).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from eventstore import streams
from eventstore.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRetried,
    JobStarted,
)
from tests.service.conftest import Service
from tests.service.test_ops_api import LEAD, RESULT

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("JOBTRAIL_SCHEMATHESIS_SEED", "20261122"))
MAX_EXAMPLES = int(os.environ.get("JOBTRAIL_SCHEMATHESIS_EXAMPLES", "25"))
REQUEST_TIMEOUT = 10.0
TEST_TIMEOUT = 80.0
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
SKIPPED = {"/api/events"}  # an endless stream: nothing to validate, nothing that ends


STATES: dict[str, list[Event]] = {
    "pending": [],
    "running": [JobStarted(attempt=1), JobProgressed(progress=40, message="Reading")],
    "waiting for a retry": [
        JobStarted(attempt=1),
        JobFailed(error_code="ModelTimeout", error_message="slow", attempt=1, will_retry=True),
        JobRetried(next_attempt_at=datetime(2030, 1, 1, tzinfo=UTC)),
    ],
    "completed": [JobStarted(attempt=1), JobCompleted(result=RESULT)],
    "failed": [
        JobStarted(attempt=1),
        JobFailed(error_code="ResourceNotFound", error_message="No documents", attempt=1),
    ],
    "cancelled": [JobCancelled(by="root")],
}


async def real_ids(svc: Service) -> dict[str, list[str]]:
    """site1's things: leads with a document each, generic and evaluation jobs in every state."""
    ops = {**svc.auth("site1", "root", "admin"), "X-Site-Id": "site1", "X-User-Id": "root"}
    ids: dict[str, list[str]] = {"job": [], "evaluation": [], "lead": [], "document": []}
    for n, events in enumerate(STATES.values()):
        lead = f"lead_{n}"
        r = await svc.client.put(f"/api/ops/leads/{lead}", json=LEAD, headers=ops)
        assert r.status_code == 201, r.text
        r = await svc.client.post(
            f"/api/ops/leads/{lead}/documents?document_type=pay_stub",
            content=b"%PDF-1.4",
            headers={**ops, "Content-Type": "application/pdf"},
        )
        assert r.status_code == 201, r.text
        ids["lead"].append(lead)
        ids["document"].append(r.json()["data"]["id"])
        r = await svc.client.post(f"/api/ops/leads/{lead}/ai-evaluation", headers=ops)
        assert r.status_code == 201, r.text
        ids["evaluation"].append(r.json()["data"]["job_id"])
        r = await svc.client.post("/api/jobs", json={"type": "noop"}, headers=ops)
        assert r.status_code == 202, r.text
        ids["job"].append(r.json()["job_id"])
        for job_id in (ids["evaluation"][-1], ids["job"][-1]):
            stream = streams.job(job_id)
            if events:
                await svc.store.append(stream, events, await svc.store.stream_version(stream))
    return ids


def path_variants(path: str, ids: dict[str, list[str]]) -> list[dict[str, str] | None]:
    """Generated ids (None), then each real thing of site1 this path can name."""
    if "{job_id}" in path:
        jobs = ids["evaluation"] if path.startswith("/api/ops/") else ids["job"]
        return [None, *({"job_id": job} for job in jobs)]
    real: dict[str, str] = {}
    if "{lead_id}" in path:
        real["lead_id"] = ids["lead"][0]
    if "{document_id}" in path:
        real["document_id"] = ids["document"][0]
    if "{site_id}" in path:
        real["site_id"] = "site1"
    return [None, real] if real else [None]


def run_schemathesis(base_url: str, token: str, ids: dict[str, list[str]]) -> list[str]:
    """Every operation, every variant; the failures found, as schemathesis reports them."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    auth = {"Authorization": f"Bearer {token}"}
    # the identity headers the token names; `wait=0` so that no poll is held
    fixed = {"X-Site-Id": "site1", "X-User-Id": "root", "Prefer": "wait=0"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(
                f"the document has an operation schemathesis cannot read: {result.err()}"
            )
            continue
        operation = result.ok()
        if operation.path in SKIPPED:
            continue
        operations += 1
        takes = [operation.path_parameters, operation.query, operation.headers, operation.body]
        variants = path_variants(operation.path, ids)
        runs = [(GenerationMode.POSITIVE, v) for v in variants]
        if any(len(part) for part in takes):  # else there is nothing to break
            # invalid input with generated ids and with one real thing: the other states
            # of a job change nothing in how its input is checked
            runs += [(GenerationMode.NEGATIVE, v) for v in variants[:2]]
        for mode, path_parameters in runs:
            strategy = operation.as_strategy(mode, headers=fixed, path_parameters=path_parameters)

            def check(case: Any) -> None:
                case.call_and_validate(
                    base_url=base_url, headers=auth, checks=CHECKS, timeout=REQUEST_TIMEOUT
                )

            started = time.monotonic()
            try:
                bounded(given(case=strategy)(check))()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup
                failures.append(f"{operation.label} {mode.value} {path_parameters}: {exc}")
            took = time.monotonic() - started
            print(f"{took:6.2f} s  {operation.label} {mode.value} {path_parameters}")
    assert operations >= 20, "the document lost its routes"
    return failures


def bounded(test: Callable[[], None]) -> Callable[[], None]:
    wrapped: Callable[[], None] = settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )(hypothesis.seed(SEED)(test))
    return wrapped


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_the_service_conforms_to_its_openapi_document(service: Service) -> None:
    print(f"schemathesis seed: {SEED} (JOBTRAIL_SCHEMATHESIS_SEED), {MAX_EXAMPLES} examples")
    ids = await real_ids(service)
    base_url = str(service.client.base_url).rstrip("/")
    token = service.token("site1", "root", "admin")
    # schemathesis is synchronous (requests): in a thread, so that uvicorn serves on
    failures = await anyio.to_thread.run_sync(run_schemathesis, base_url, token, ids)
    assert not failures, f"seed {SEED}:\n" + "\n\n".join(failures)


async def test_the_document_is_valid_openapi_3_1(service: Service) -> None:
    r = await service.client.get("/openapi.json")
    schema = schemathesis.openapi.from_dict(r.json())
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    assert r.json()["openapi"] == "3.1.0"
