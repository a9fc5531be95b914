"""End to end: a real uvicorn on 127.0.0.1 and a real worker on one file store.

The service (`create_app`) and `Worker.run` share one event loop and one store, as
`jobtrail up` runs them (`ServedApp(worker_concurrency=N)`); one test starts `jobtrail up`
itself as a subprocess, and one runs the seeds' polling clients (000 and 004) with node.
Nothing here appends to a job stream by hand: every event comes from the HTTP routes or
from the worker running the job's handler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup, TaskStatus

from eventstore import AppendTo, EventStore, RecordedEvent, streams
from eventstore.events import event_type
from eventstore.filestore import FileStore, open_file_store
from service.app import create_app
from service.auth import Principal, Role, issue_token
from service.settings import Settings, with_handlers
from tests.uvicorn_client import served
from worker.assemble import open_worker

pytestmark = pytest.mark.anyio

SECRET = "end-to-end-secret-for-jobtrail-tests-0123456789"
ROOT = Path(__file__).resolve().parents[2]
JOBTRAIL = ROOT / ".venv" / "bin" / "jobtrail"
CLIENTS = Path(__file__).resolve().parent / "clients"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# -- the strong applicant of docs/evaluation.md, without the ID image ------------------

MARIA: dict[str, Any] = {
    "first_name": "Maria",
    "last_name": "Lopez",
    "email": "maria@example.com",
    "phone": "+1 555 0100",
    "move_in_date": "2026-03-01",
    "monthly_rent": 1800,
}
PAY_STUB = """ACME LOGISTICS INC - EARNINGS STATEMENT
Employee: Maria Lopez
Employer: Acme Logistics Inc
Pay frequency: Biweekly
Pay period: 03/01/2025 - 03/14/2025
Gross pay: $3,000.00    Net pay: $2,310.00
Gross pay YTD: $18,000.00
"""
LETTER = """To whom it may concern,
This letter confirms that Maria Lopez is employed by Acme Logistics Inc as a supervisor.
She has worked with us for 4 years, with an annual salary of $78,000.
"""
BANK = """First Bank - statement for March 2025
Account holder: Maria Lopez
03/07 Payroll deposit ACME LOGISTICS 3,000.00
03/15 Rent payment -1,800.00
03/21 Payroll deposit ACME LOGISTICS 3,000.00
Closing balance: 9,420.55
"""
STRONG_TEXTS = {"pay_stub": PAY_STUB, "employment_letter": LETTER, "bank_statement": BANK}
# The golden "strong" lead scores 100 with its ID image; without it the documents part is
# 15 (three kinds) and `missing_id_document` replaces `images_not_reviewed`:
# 40 (rent 30% of 6,000) + 20 (letter names the employer, 48 months) + 15 + 20 = 95.
STRONG = {
    "score": 95,
    "label": "A",
    "recommendation": "approve",
    "risk_flags": ["missing_id_document"],
    "fraud_signals": [],
    "model_version": "jobtrail-rules-1",
}
# Only the pay stub readable: 40 (27.7% of 6,500) + 10 (employer on a pay stub only)
# + 5 (one kind) + 20 = 75, and the handler's own `document_unreadable` flag last.
PAY_STUB_ONLY = {
    "score": 75,
    "label": "B",
    "recommendation": "review",
    "risk_flags": ["unverified_employment", "missing_id_document", "document_unreadable"],
    "fraud_signals": [],
    "model_version": "jobtrail-rules-1",
}
CORRUPT_PDF = b"%PDF-1.4\nnot a pdf at all\n%%EOF\n"
TRUNCATED_PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R"

HANDLERS = '''"""Job types of the end-to-end tests (API.md section 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from worker import Fail, Handlers, JobContext

handlers = Handlers()


@handlers.job("echo")
async def echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    await ctx.progress(50, "Echoing...")
    return {"echo": params, "attempt": ctx.attempt}


@handlers.job("gated")
async def gated(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Reports progress, then waits until the file `params["gate"]` exists."""
    await ctx.progress(30, "Waiting for the gate...")
    gate = Path(params["gate"])
    with anyio.fail_after(30):
        while not gate.exists():
            await anyio.sleep(0.02)
    return {"gate": "passed"}


@handlers.job("steps")
async def steps(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """`steps` progress reports `pause` seconds apart (above the 0.25 s coalescing)."""
    count = int(params.get("steps", 3))
    for step in range(1, count + 1):
        await anyio.sleep(float(params.get("pause", 0.3)))
        await ctx.progress(step * 100 // (count + 1), f"step {step} of {count}")
    return {"steps": count}


@handlers.job("forever")
async def forever(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Runs until it is cancelled, reporting a tick every 50 ms."""
    tick = 0
    while True:
        tick += 1
        await ctx.progress(min(tick, 99), f"tick {tick}")
        await anyio.sleep(0.05)


@handlers.job("refuse")
async def refuse(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    raise Fail("NothingToDo", "This job refuses to run.")
'''


def write_handlers(directory: Path) -> Path:
    path = directory / "e2e_handlers.py"
    path.write_text(HANDLERS)
    return path


# -- the live service and worker ---------------------------------------------------------


@dataclass
class Live:
    """A served app and (once started) a worker over one file store."""

    client: httpx.AsyncClient
    base_url: str
    store: FileStore
    settings: Settings
    tmp: Path
    _tg: TaskGroup
    _worker_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    worker_running: bool = False

    def token(self, site: str = "site1", user: str = "user1", role: Role = "member") -> str:
        return issue_token(SECRET, Principal(site, user, role), 3600)

    def auth(
        self, site: str = "site1", user: str = "user1", role: Role = "member"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(site, user, role)}"}

    def ops(
        self, site: str = "site1", user: str = "user1", role: Role = "member"
    ) -> dict[str, str]:
        return {**self.auth(site, user, role), "X-Site-Id": site, "X-User-Id": user}

    async def start_worker(self) -> None:
        """Run `Worker.run` in the fixture's task group until the fixture ends."""
        assert not self.worker_running
        await self._tg.start(self._run_worker)
        self.worker_running = True

    async def _run_worker(self, *, task_status: TaskStatus[None]) -> None:
        with self._worker_scope:
            async with open_worker(self.store, self.settings, concurrency=4) as worker:
                await worker.run(task_status=task_status)

    def stop_worker(self) -> None:
        self._worker_scope.cancel()


class SlowAckStore(EventStore):
    """The file store as the service sees it, where the acknowledgement of a manual
    `retried` comes back only once a worker has claimed the job (a slow disk or a busy
    loop would do the same): the worker wins the race against the route's answer."""

    def __init__(self, inner: FileStore) -> None:
        self.inner = inner

    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        recorded = await self.inner.append_many(batch)
        for events in recorded:
            for event in events:
                if event.type == "retried" and getattr(event.event, "manual", False):
                    await self._until_claimed(event)
        return recorded

    async def _until_claimed(self, retried: RecordedEvent) -> None:
        """Until the job's stream moves past `retried` (5 s at most); the worker appends
        straight to the file store, so there is no event to wait on here."""
        with anyio.move_on_after(5):
            while await self.inner.stream_version(retried.stream) <= retried.version:  # noqa: ASYNC110
                await anyio.sleep(0.01)

    async def prune(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        return await self.inner.prune(batch)

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        return await self.inner.read_stream(stream, from_version)

    async def stream_version(self, stream: str) -> int:
        return await self.inner.stream_version(stream)

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        return await self.inner.read_all(from_position, limit)

    async def head(self) -> int:
        return await self.inner.head()

    def follow(self, from_position: int = 1) -> AsyncIterator[RecordedEvent]:
        return self.inner.follow(from_position)

    async def aclose(self) -> None:
        """The fixture owns the file store and closes it."""


@asynccontextmanager
async def live_service(tmp: Path, *, worker: bool, slow_ack: bool = False) -> AsyncIterator[Live]:
    data = tmp / "data"
    settings = with_handlers(
        Settings(
            data=data,
            secret=SECRET,
            retry_base_delay=0.05,
            handler_modules=(str(write_handlers(tmp)),),
        )
    )
    async with open_file_store(data) as store:
        app = create_app(SlowAckStore(store) if slow_ack else store, settings)
        async with (
            served(app, within=10) as base_url,
            anyio.create_task_group() as tg,  # the worker's
            httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(20.0)) as client,
        ):
            live = Live(client, base_url, store, settings, tmp, tg)
            if worker:
                await live.start_worker()
            try:
                yield live
            finally:
                live.stop_worker()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """Service and worker, both running."""
    async with live_service(tmp_path, worker=True) as running:
        yield running


@pytest.fixture
async def idle(tmp_path: Path) -> AsyncIterator[Live]:
    """The service alone; the test starts the worker with `start_worker()`."""
    async with live_service(tmp_path, worker=False) as running:
        yield running


# -- helpers -----------------------------------------------------------------------------


def month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def put_lead(live: Live, lead_id: str, **fields: Any) -> None:
    r = await live.client.put(
        f"/api/ops/leads/{lead_id}", json={**MARIA, **fields}, headers=live.ops()
    )
    assert r.status_code in (200, 201), r.text


async def upload(
    live: Live, lead_id: str, document_type: str, body: bytes, mime: str = "text/plain"
) -> str:
    r = await live.client.post(
        f"/api/ops/leads/{lead_id}/documents",
        params={"document_type": document_type},
        content=body,
        headers={**live.ops(), "Content-Type": mime},
    )
    assert r.status_code == 201, r.text
    doc_id: str = r.json()["data"]["id"]
    return doc_id


async def upload_strong(live: Live, lead_id: str) -> None:
    for document_type, text in STRONG_TEXTS.items():
        await upload(live, lead_id, document_type, text.encode())


async def create_evaluation(live: Live, lead_id: str, body: Any = None) -> httpx.Response:
    url = f"/api/ops/leads/{lead_id}/ai-evaluation"
    if body is None:
        return await live.client.post(url, headers=live.ops())
    return await live.client.post(url, json=body, headers=live.ops())


async def created_evaluation(live: Live, lead_id: str) -> str:
    r = await create_evaluation(live, lead_id)
    assert r.status_code == 201, r.text
    assert r.json()["data"]["status"] == "pending"
    job_id: str = r.json()["data"]["job_id"]
    return job_id


async def final_evaluation(live: Live, job_id: str, within: float = 15.0) -> dict[str, Any]:
    """Poll the ops route with `Prefer: wait=5` until the job is final (200)."""
    url = f"/api/ops/ai-evaluation-jobs/{job_id}"
    with anyio.fail_after(within):
        while True:
            r = await live.client.get(url, headers={**live.ops(), "Prefer": "wait=5"})
            if r.status_code == 200:
                data: dict[str, Any] = r.json()["data"]
                return data
            assert r.status_code == 202, r.text
            assert r.headers["preference-applied"] == "wait=5"
            assert 1 <= int(r.headers["retry-after"]) <= 10


async def create_job(live: Live, job_type: str, params: dict[str, Any] | None = None) -> str:
    body = {"type": job_type, "params": params or {}, "metadata": {"case_id": "case_1"}}
    r = await live.client.post("/api/jobs", json=body, headers=live.auth())
    assert r.status_code == 202, r.text
    answer = r.json()
    job_id: str = answer["job_id"]
    assert UUID7.fullmatch(job_id)
    assert answer["status"] == "accepted"
    assert answer["poll_url"] == r.headers["location"] == f"/api/jobs/{job_id}"
    assert answer["events_url"] == f"/api/jobs/{job_id}/events"
    return job_id


async def poll_job(
    live: Live, job_id: str, until: Callable[[dict[str, Any]], bool], within: float = 10.0
) -> dict[str, Any]:
    """Poll /api/jobs/{id} with `Prefer: wait=5` until `until(job)` holds."""
    with anyio.fail_after(within):
        while True:
            r = await live.client.get(
                f"/api/jobs/{job_id}", headers={**live.auth(), "Prefer": "wait=5"}
            )
            assert r.status_code == 200, r.text
            job: dict[str, Any] = r.json()
            if until(job):
                return job


def is_final(job: dict[str, Any]) -> bool:
    return job["status"] in ("completed", "failed", "cancelled")


async def history(live: Live, job_id: str) -> list[str]:
    """The job's event types, from the audit trail route."""
    r = await live.client.get(f"/api/jobs/{job_id}/events", headers=live.auth())
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["events"]]


def milestones(types: list[str]) -> list[str]:
    """A history without its `progressed` events, which coalesce as timing has it."""
    return [t for t in types if t != "progressed"]


async def used(live: Live) -> int:
    r = await live.client.get("/api/usage", headers=live.auth())
    assert r.status_code == 200, r.text
    count: int = r.json()["used"]
    return count


# -- 1. the ops evaluation flow ----------------------------------------------------------


async def test_an_evaluation_runs_from_upload_to_the_leads_score(live: Live) -> None:
    await put_lead(live, "lead_1")
    await upload_strong(live, "lead_1")
    job_id = await created_evaluation(live, "lead_1")

    done = await final_evaluation(live, job_id)
    assert done["status"] == "completed", done
    assert done["job_id"] == job_id and done["lead_id"] == "lead_1"
    assert TIME.fullmatch(done["completed_at"]) and isinstance(done["duration_ms"], int)
    evaluation = done["evaluation"]
    assert set(evaluation) == {
        "id",
        "score",
        "label",
        "recommendation",
        "summary",
        "risk_flags",
        "fraud_signals",
        "evaluated_at",
        "model_version",
    }
    assert {k: evaluation[k] for k in STRONG} == STRONG
    assert evaluation["id"] == "eval_" + job_id.replace("-", "")
    assert TIME.fullmatch(evaluation["evaluated_at"])
    assert evaluation["summary"].startswith("Score 95 (A, approve): rent is 30% ")

    lead = await live.client.get("/api/ops/leads/lead_1", headers=live.ops())
    assert lead.status_code == 200, lead.text
    view = lead.json()["data"]
    assert view["ai_score"] == 95 and view["ai_label"] == "A"
    assert view["status"] == "ai_evaluated"
    assert len(view["documents"]) == 3

    again = await create_evaluation(live, "lead_1", {"force_refresh": False})
    assert again.status_code == 409 and again.json()["error"] == "AlreadyEvaluated"
    assert again.json()["evaluation_id"] == evaluation["id"]
    assert again.json()["job_id"] == job_id
    assert await used(live) == 1

    generic = await live.client.get(f"/api/jobs/{job_id}", headers=live.auth())
    job = generic.json()
    assert job["job_type"] == "ai_evaluation" and job["status"] == "completed"
    assert job["metadata"]["lead_id"] == "lead_1" and job["progress"] == 100
    assert job["result"]["score"] == 95
    types = await history(live, job_id)
    assert milestones(types) == ["requested", "started", "completed"] and "progressed" in types


# -- 2. no documents, then a manual retry -------------------------------------------------


async def test_a_lead_without_documents_fails_and_a_manual_retry_completes(live: Live) -> None:
    await put_lead(live, "lead_1")
    job_id = await created_evaluation(live, "lead_1")
    failed = await final_evaluation(live, job_id)
    assert failed["status"] == "failed", failed
    assert failed["error_code"] == "ResourceNotFound"
    assert failed["can_retry"] is True
    assert failed["retry_count"] == 1 and failed["max_retries"] == 3
    assert milestones(await history(live, job_id)) == ["requested", "started", "failed"]

    await upload_strong(live, "lead_1")
    retry = await live.client.post(
        f"/api/ops/ai-evaluation-jobs/{job_id}/retry", headers=live.ops(user="user2")
    )
    assert retry.status_code == 202, retry.text
    assert retry.json()["data"]["job_id"] == job_id
    assert retry.json()["data"]["status"] == "pending"  # API.md: the answer of the retry

    done = await final_evaluation(live, job_id)
    assert done["status"] == "completed", done
    assert done["evaluation"]["score"] == 95
    assert await used(live) == 1, "a manual retry uses no quota"
    events = await live.client.get(f"/api/jobs/{job_id}/events", headers=live.auth())
    recorded = events.json()["events"]
    assert milestones([e["type"] for e in recorded]) == [
        "requested",
        "started",
        "failed",
        "retried",
        "started",
        "completed",
    ]
    (retried,) = [e["data"] for e in recorded if e["type"] == "retried"]
    assert retried["manual"] is True
    assert retried["by"] == "user2"


async def test_a_retry_answers_in_the_pending_form_when_the_worker_is_quicker(
    tmp_path: Path,
) -> None:
    async with live_service(tmp_path, worker=True, slow_ack=True) as live:
        await put_lead(live, "lead_1")
        job_id = await created_evaluation(live, "lead_1")
        assert (await final_evaluation(live, job_id))["error_code"] == "ResourceNotFound"
        await upload_strong(live, "lead_1")
        retry = await live.client.post(
            f"/api/ops/ai-evaluation-jobs/{job_id}/retry", headers=live.ops()
        )
        assert retry.status_code == 202, retry.text
        assert (await final_evaluation(live, job_id))["status"] == "completed"
    assert retry.json()["data"]["status"] == "pending", retry.json()


# -- 3. unreadable documents ---------------------------------------------------------------


async def test_an_unreadable_document_beside_a_good_one_is_flagged(live: Live) -> None:
    await put_lead(live, "lead_1")
    await upload(live, "lead_1", "pay_stub", PAY_STUB.encode())
    await upload(live, "lead_1", "bank_statement", CORRUPT_PDF, "application/pdf")
    job_id = await created_evaluation(live, "lead_1")
    done = await final_evaluation(live, job_id)
    assert done["status"] == "completed", done
    evaluation = done["evaluation"]
    assert {k: evaluation[k] for k in PAY_STUB_ONLY} == PAY_STUB_ONLY
    lead = (await live.client.get("/api/ops/leads/lead_1", headers=live.ops())).json()["data"]
    assert (lead["ai_score"], lead["ai_label"], lead["status"]) == (75, "B", "ai_evaluated")


async def test_no_readable_document_fails_with_storage_error_after_retries(live: Live) -> None:
    await put_lead(live, "lead_1")
    await upload(live, "lead_1", "pay_stub", CORRUPT_PDF, "application/pdf")
    await upload(live, "lead_1", "bank_statement", TRUNCATED_PDF, "application/pdf")
    job_id = await created_evaluation(live, "lead_1")
    failed = await final_evaluation(live, job_id)
    assert failed["status"] == "failed", failed
    assert failed["error_code"] == "StorageError"
    assert "2 documents" in failed["error_message"]
    assert failed["can_retry"] is False
    assert failed["retry_count"] == 3 and failed["max_retries"] == 3
    assert milestones(await history(live, job_id)) == [
        "requested",
        "started",
        "failed",
        "retried",
        "started",
        "failed",
        "retried",
        "started",
        "failed",
    ]
    events = (await live.client.get(f"/api/jobs/{job_id}/events", headers=live.auth())).json()
    failures = [e["data"] for e in events["events"] if e["type"] == "failed"]
    assert [(f["attempt"], f["will_retry"]) for f in failures] == [(1, True), (2, True), (3, False)]
    assert await used(live) == 1


# -- 4. the defensive quota check ------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "outcome"),
    [(0, "failed"), (1, "completed")],
    ids=["lowered_below_used", "lowered_to_used"],
)
async def test_the_worker_rechecks_the_quota_only_when_used_is_above_it(
    idle: Live, limit: int, outcome: str
) -> None:
    await put_lead(idle, "lead_1")
    await upload_strong(idle, "lead_1")
    job_id = await created_evaluation(idle, "lead_1")
    admin = idle.ops(user="boss", role="admin")
    r = await idle.client.put(
        "/api/ops/sites/site1/quota", json={"limit": limit, "tier": "free"}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["used"] == 1 and r.json()["limit"] == limit

    await idle.start_worker()
    final = await final_evaluation(idle, job_id)
    assert final["status"] == outcome, final
    if outcome == "failed":
        assert final["error_code"] == "QuotaExceeded"
        assert (
            final["error_message"] == f"Monthly evaluation limit ({limit}) reached for this site."
        )
        assert final["retry_count"] == 1 and final["can_retry"] is True
        assert milestones(await history(idle, job_id)) == ["requested", "started", "failed"]
    else:
        assert final["evaluation"]["score"] == 95
    assert await used(idle) == 1


# -- 5. generic jobs with handlers of one's own ----------------------------------------------


async def test_a_generic_job_completes_with_its_handlers_result(live: Live) -> None:
    job_id = await create_job(live, "echo", {"x": 1})
    job = await poll_job(live, job_id, is_final)
    assert job["status"] == "completed", job
    assert job["result"] == {"echo": {"x": 1}, "attempt": 1}
    assert job["job_type"] == "echo" and job["user_id"] == "user1"
    assert job["metadata"] == {"case_id": "case_1"}
    assert job["progress"] == 100 and job["error"] is None and job["error_code"] is None
    assert job["retry_count"] == 0 and job["next_attempt_at"] is None
    for name in ("created_at", "started_at", "completed_at"):
        assert TIME.fullmatch(job[name]), name

    legacy = await live.client.get(f"/api/job-status/{job_id}", headers=live.auth())
    assert legacy.status_code == 200, legacy.text
    old = legacy.json()
    assert set(old) == {
        "job_id",
        "status",
        "created_at",
        "updated_at",
        "result",
        "error_message",
        "progress",
    }
    assert old["job_id"] == job_id and old["status"] == "completed"
    assert old["result"] == job["result"] and old["error_message"] is None
    assert old["progress"] == 100
    assert await used(live) == 0, "other job types use no quota"


async def test_progress_is_visible_while_the_handler_runs(live: Live) -> None:
    gate = live.tmp / "gate"
    job_id = await create_job(live, "gated", {"gate": str(gate)})
    running = await poll_job(live, job_id, lambda j: j["progress_message"] != "")
    assert running["status"] == "running", running
    assert running["progress"] == 30
    assert running["progress_message"] == "Waiting for the gate..."
    assert TIME.fullmatch(running["started_at"]) and running["completed_at"] is None
    old = (await live.client.get(f"/api/job-status/{job_id}", headers=live.auth())).json()
    assert old["status"] == "running" and old["progress"] == 30

    gate.touch()
    done = await poll_job(live, job_id, is_final)
    assert done["status"] == "completed" and done["result"] == {"gate": "passed"}
    assert done["progress"] == 100


async def test_a_running_job_is_cancelled_within_a_second(live: Live) -> None:
    job_id = await create_job(live, "forever")
    await poll_job(live, job_id, lambda j: j["status"] == "running" and j["progress"] > 0)
    began = time.monotonic()
    r = await live.client.post(f"/api/jobs/{job_id}/cancel", headers=live.auth())
    assert r.status_code == 202, r.text
    asked = r.json()
    assert asked["status"] == "running" and asked["cancel_requested"] is True
    assert asked["job_id"] == job_id

    ended = await poll_job(live, job_id, is_final, within=5)
    assert time.monotonic() - began < 1.5
    assert ended["status"] == "cancelled", ended
    assert milestones(await history(live, job_id)) == [
        "requested",
        "started",
        "cancel_requested",
        "cancelled",
    ]
    old = (await live.client.get(f"/api/job-status/{job_id}", headers=live.auth())).json()
    assert old["status"] == "failed" and old["error_message"] == "Job cancelled"
    again = await live.client.post(f"/api/jobs/{job_id}/cancel", headers=live.auth())
    assert again.status_code == 202 and again.json()["status"] == "cancelled"


# -- 6. Server-Sent Events while the worker runs the job -------------------------------------


async def read_sse(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of an SSE body, each as its fields (`id`, `event`, `data`)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "event" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_the_event_stream_follows_the_job_and_ends_after_completed(live: Live) -> None:
    job_id = await create_job(live, "steps", {"steps": 3, "pause": 0.3})
    seen: list[dict[str, str]] = []
    headers = {**live.auth(), "Accept": "text/event-stream"}
    with anyio.fail_after(10):
        async with live.client.stream(
            "GET", f"/api/jobs/{job_id}/events", headers=headers
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event in read_sse(response):
                seen.append(event)
            # the loop ends only when the service closes the stream
    types = [e["event"] for e in seen]
    assert types[:2] == ["requested", "started"] and types[-1] == "completed", types
    assert set(types[2:-1]) == {"progressed"} and len(types[2:-1]) >= 2, types
    assert [int(e["id"]) for e in seen] == list(range(1, len(seen) + 1))
    bodies = [json.loads(e["data"]) for e in seen]
    assert all(b["job_id"] == job_id for b in bodies)
    assert [b["type"] for b in bodies] == types
    assert bodies[-1]["data"]["result"] == {"steps": 3}
    messages = [b["data"]["message"] for b in bodies if b["type"] == "progressed"]
    assert messages[-1] == "step 3 of 3"

    replay = await live.client.get(
        f"/api/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": str(len(seen))}
    )
    assert replay.status_code == 204, "a reconnect that saw the final event"


# -- 7. `jobtrail up` as a process -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}


@dataclass
class Running:
    """A `jobtrail` server process, a client for it, and where its output goes."""

    process: anyio.abc.Process
    client: httpx.AsyncClient
    data: Path
    log: Path
    code: int | None = None
    stopped_in: float = 0.0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def token(self, site: str = "site1", user: str = "user1") -> str:
        command = [str(JOBTRAIL), "token", "--data", str(self.data)]
        done = await anyio.run_process([*command, "--site", site, "--user", user], env=clean_env())
        return done.stdout.decode().strip()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig`, wait (bounded) for the exit; the code and time are kept."""
        began = time.monotonic()
        self.process.send_signal(sig)
        with anyio.fail_after(15):
            self.code = await self.process.wait()
        self.stopped_in = time.monotonic() - began


@asynccontextmanager
async def jobtrail_server(tmp: Path, command: str, *flags: str) -> AsyncIterator[Running]:
    """`jobtrail COMMAND --data DIR --port P FLAGS...` until healthy; killed if left running."""
    data = tmp / f"{command}-data"
    port = free_port()
    log_path = tmp / f"{command}.log"
    argv = [str(JOBTRAIL), command, "--data", str(data), "--port", str(port), *flags]
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=clean_env()
        )
    base_url = f"http://127.0.0.1:{port}"
    async with process, httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        running = Running(process, client, data, log_path)
        try:
            with anyio.fail_after(20):
                while True:
                    assert process.returncode is None, running.output()
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)
            yield running
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()


async def test_jobtrail_up_runs_jobs_and_hands_back_a_running_one_on_sigterm(
    tmp_path: Path,
) -> None:
    handlers = str(write_handlers(tmp_path))
    flags = ("--handlers", handlers, "--concurrency", "2")
    async with jobtrail_server(tmp_path, "up", *flags) as up:
        token = await up.token(user="u1")
        assert token.count(".") == 2 and "\n" not in token
        auth = {"Authorization": f"Bearer {token}"}

        r = await up.client.post(
            "/api/jobs", json={"type": "steps", "params": {"steps": 2}}, headers=auth
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        with anyio.fail_after(15):
            while True:
                r = await up.client.get(f"/api/jobs/{job_id}", headers={**auth, "Prefer": "wait=5"})
                if r.json()["status"] in ("completed", "failed", "cancelled"):
                    break
        assert r.json()["status"] == "completed", r.text
        assert r.json()["result"] == {"steps": 2} and r.json()["user_id"] == "u1"

        # A job still running when the process is told to stop is handed back at once.
        r = await up.client.post("/api/jobs", json={"type": "forever"}, headers=auth)
        running_id = r.json()["job_id"]
        with anyio.fail_after(10):
            while True:
                r = await up.client.get(
                    f"/api/jobs/{running_id}", headers={**auth, "Prefer": "wait=2"}
                )
                if r.json()["status"] == "running":
                    break
        await up.stop()
    output = up.output()
    # 0 is what API.md promises; -SIGTERM is the known bug the next test pins down.
    assert up.code in (0, -signal.SIGTERM), output
    assert up.stopped_in < 5, f"took {up.stopped_in:.1f} s to stop:\n{output}"
    assert "Traceback" not in output, output
    assert f"job {running_id} attempt 1 handed back" in output, output

    async with open_file_store(up.data) as store:
        recorded = await store.read_stream(streams.job(running_id))
    types = milestones([event_type(e.event) for e in recorded])
    assert types == ["requested", "started", "failed", "retried"], types
    assert getattr(recorded[-2].event, "error_code", None) == "WorkerLost"


@pytest.mark.parametrize("command", ["up", "serve"])
async def test_jobtrail_exits_0_on_sigterm(tmp_path: Path, command: str) -> None:
    async with jobtrail_server(tmp_path, command) as server:
        await server.stop()
    assert server.stopped_in < 5
    assert server.code == 0, server.output()


# -- 8. the seeds' polling clients, with node --------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    """A node with a global `fetch` (18+): installed with apt-get if missing."""
    found = shutil.which("node")
    if found is None and sys.platform.startswith("linux") and shutil.which("apt-get"):
        try:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=300)
            subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "nodejs"],
                check=True,
                capture_output=True,
                timeout=300,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"node is not installed and apt-get could not install it: {exc}")
        found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed and could not be installed with apt-get")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
    major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < 18:
        pytest.skip(f"node {version.stdout.strip()} has no global fetch (18+ needed)")
    return found


@dataclass
class NodeRun:
    returncode: int
    stdout: str
    stderr: str


async def run_client(live: Live, node: str, script: str, *args: str) -> NodeRun:
    env = {
        **clean_env(),
        "JOBTRAIL_URL": live.base_url,
        "JOBTRAIL_TOKEN": live.token(),
        "JOBTRAIL_SITE": "site1",
    }
    done = await anyio.run_process(
        [node, str(CLIENTS / script), *args], env=env, check=False, stdin=subprocess.DEVNULL
    )
    return NodeRun(done.returncode, done.stdout.decode(), done.stderr.decode())


OPS_POLL = 'method="GET",route="/api/ops/ai-evaluation-jobs/{job_id}"'
JOB_POLL = 'method="GET",route="/api/jobs/{job_id}"'


async def polled(live: Live, wanted: dict[str, int]) -> None:
    """Until the service has answered each route at least `wanted` times (/metrics)."""
    counts: dict[str, float] = {}
    with anyio.fail_after(15):
        while any(counts.get(route, 0) < n for route, n in wanted.items()):
            await anyio.sleep(0.05)
            text = (await live.client.get("/metrics")).text
            counts = {
                route: sum(
                    float(line.rpartition(" ")[2])
                    for line in text.splitlines()
                    if line.startswith("jobtrail_http_requests_total{") and route in line
                )
                for route in wanted
            }


async def test_the_seed_polling_clients_reach_the_end(idle: Live, node: str) -> None:
    # Seed 000: one evaluation that completes, one that fails (no documents).
    await put_lead(idle, "strong")
    await upload_strong(idle, "strong")
    await put_lead(idle, "empty")
    evaluated = await created_evaluation(idle, "strong")
    refused = await created_evaluation(idle, "empty")
    # Seed 004: a job that runs for a while (polled every 2 s), one that fails.
    slow = await create_job(idle, "steps", {"steps": 3, "pause": 0.5})
    failing = await create_job(idle, "refuse")

    runs: dict[str, NodeRun] = {}

    async def run(name: str, script: str, *args: str) -> None:
        runs[name] = await run_client(idle, node, script, *args)

    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "evaluated", "poll_evaluation.mjs", evaluated)
            tg.start_soon(run, "refused", "poll_evaluation.mjs", refused)
            tg.start_soon(run, "slow", "poll_job.mjs", slow, "60000")
            tg.start_soon(run, "failing", "poll_job.mjs", failing)
            # The clients' first polls find every job pending; then the worker starts.
            await polled(idle, {OPS_POLL: 2, JOB_POLL: 2})
            await idle.start_worker()

    ok = runs["evaluated"]
    assert ok.returncode == 0, ok
    evaluation = json.loads(ok.stdout)
    assert {k: evaluation[k] for k in STRONG} == STRONG
    no_docs = runs["refused"]
    assert no_docs.returncode == 1 and "no documents" in no_docs.stderr, no_docs
    slow_run = runs["slow"]
    assert slow_run.returncode == 0, slow_run
    assert json.loads(slow_run.stdout) == {"steps": 3}
    fail_run = runs["failing"]
    assert fail_run.returncode == 1, fail_run
    assert "failed: This job refuses to run." in fail_run.stderr, fail_run
