"""`jobtrail audit` on a store built by the real service and worker, and beside an appender.

The store is built once per module: uvicorn serving `create_app`, a worker from
`open_worker` running this module's `handlers`, jobs created, cancelled and retried over
HTTP. `test_export_import` builds its own with `build_store`.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from eventstore.filestore import FileStore, open_file_store
from eventstore.records import uuid7
from service.app import create_app
from service.auth import Principal, Role, issue_token
from service.cli import main
from service.settings import Settings, with_handlers
from tests.uvicorn_client import served_client
from worker import Fail, Handlers, JobContext
from worker.assemble import open_worker

SECRET = "test-secret-for-jobtrail-audit-tests-0123456"
REPO = Path(__file__).resolve().parents[2]

# -- job types for the worker: `handler_modules=("tests.operator.test_audit",)` -----------

handlers = Handlers()
_runs: dict[str, int] = {}


@handlers.job("noop")
async def noop(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


@handlers.job("flaky")
async def flaky(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Run 1 raises (retried automatically), run 2 fails for good, run 3 succeeds."""
    run = _runs[ctx.job_id] = _runs.get(ctx.job_id, 0) + 1
    if run == 1:
        raise RuntimeError("flaky failure")
    if run == 2:
        raise Fail("Broken", "the input is broken")
    return {"runs": run}


@handlers.job("hang")
async def hang(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    await ctx.progress(10, "waiting")
    await anyio.sleep(3600)
    return {}


# -- the store -------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A data directory written by the service and a worker, and the jobs in it."""

    data: Path
    completed: str  # noop of site1, completed
    cancelled: str  # noop of site1, cancelled by admin `boss` before any worker saw it
    flaky: str  # failed, retried, failed for good, retried by hand, completed
    hung: str  # cancelled by `user1` while running
    other_site: str  # noop of site2, completed
    evaluation: str  # ai_evaluation of site1's lead_1 (quota, lead, document streams)
    flaky_events: list[dict[str, Any]]  # GET /api/jobs/{flaky}/events, as the API says


def auth(site: str = "site1", user: str = "user1", role: Role = "member") -> dict[str, str]:
    token = issue_token(SECRET, Principal(site, user, role), 3600)
    return {"Authorization": f"Bearer {token}", "X-Site-Id": site, "X-User-Id": user}


async def _create(
    client: httpx.AsyncClient,
    job_type: str = "noop",
    site: str = "site1",
    headers: dict[str, str] | None = None,
    **body: Any,
) -> str:
    headers = {**auth(site), **(headers or {})}
    r = await client.post("/api/jobs", json={"type": job_type, **body}, headers=headers)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def _until(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], site: str = "site1"
) -> None:
    """Long-poll the job (`Prefer: wait`) until its status is one of `statuses`."""
    headers = {**auth(site, "boss", "admin"), "Prefer": "wait=5"}
    with anyio.fail_after(20):
        while True:
            r = await client.get(f"/api/jobs/{job_id}", headers=headers)
            assert r.status_code == 200, r.text
            if r.json()["status"] in statuses:
                return


async def _use(client: httpx.AsyncClient, store: FileStore, settings: Settings) -> Built:
    """What users, operators and a worker do to a store."""
    final = {"completed", "failed", "cancelled"}
    completed = await _create(client, metadata={"order": 42})
    cancelled = await _create(client)
    r = await client.post(f"/api/jobs/{cancelled}/cancel", headers=auth(user="boss", role="admin"))
    assert r.status_code == 202, r.text
    r = await client.put(
        "/api/ops/sites/site1/quota",
        json={"limit": 5, "tier": "pro"},
        headers=auth(user="boss", role="admin"),
    )
    assert r.status_code == 200, r.text
    lead = {"first_name": "Maria", "last_name": "Lopez", "email": "m@example.com"}
    r = await client.put("/api/ops/leads/lead_1", json=lead, headers=auth())
    assert r.status_code == 201, r.text
    r = await client.post(
        "/api/ops/leads/lead_1/documents",
        params={"document_type": "pay_stub"},
        content=b"monthly income 5000",
        headers={**auth(), "Content-Type": "text/plain"},
    )
    assert r.status_code == 201, r.text
    r = await client.post("/api/ops/leads/lead_1/ai-evaluation", headers=auth())
    assert r.status_code == 201, r.text
    evaluation: str = r.json()["data"]["job_id"]
    key = {"Idempotency-Key": "order-7"}
    once = await _create(client, headers=key, params={"n": 7})
    again = await _create(client, headers=key, params={"n": 7})
    assert again == once, "the repeat is answered from the key"
    other_site = await _create(client, site="site2")
    flaky_job = await _create(client, "flaky", max_retries=3)
    hung = await _create(client, "hang")
    async with (
        open_worker(store, settings, concurrency=4, env={}) as worker,
        anyio.create_task_group() as running,
    ):
        await running.start(worker.run)
        await _until(client, hung, {"running"})
        r = await client.post(f"/api/jobs/{hung}/cancel", headers=auth())
        assert r.status_code == 202, r.text
        await _until(client, flaky_job, {"failed"})
        r = await client.post(
            f"/api/jobs/{flaky_job}/retry", headers=auth(user="boss", role="admin")
        )
        assert r.status_code == 202, r.text
        for job_id, site in (
            (completed, "site1"),
            (once, "site1"),
            (other_site, "site2"),
            (evaluation, "site1"),
            (flaky_job, "site1"),
            (hung, "site1"),
        ):
            await _until(client, job_id, final, site)
        running.cancel_scope.cancel()
    r = await client.get(f"/api/jobs/{flaky_job}/events", headers=auth())
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return Built(
        store.log.layout.root,
        completed,
        cancelled,
        flaky_job,
        hung,
        other_site,
        evaluation,
        events,
    )


async def _build(data: Path) -> Built:
    settings = with_handlers(
        Settings(
            data=data,
            secret=SECRET,
            retry_base_delay=0.05,
            handler_modules=("tests.operator.test_audit",),
        )
    )
    async with open_file_store(data) as store:
        async with served_client(create_app(store, settings)) as client:
            built = await _use(client, store, settings)
    return built


def build_store(data: Path) -> Built:
    """A data directory at `data` written by the real service and worker."""
    return anyio.run(_build, data)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_store(tmp_path_factory.mktemp("audit") / "data")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- an appender in another process ------------------------------------------------------

APPENDER = """
import sys, time
from pathlib import Path
from eventstore import streams
from eventstore.events import JobProgressed, JobRequested, JobStarted, QuotaReserved
from eventstore.filelog import FileLog
from eventstore.records import AppendTo, new, uuid7

data, job, count = Path(sys.argv[1]), streams.job(sys.argv[2]), int(sys.argv[3])
log = FileLog(data, create=False)
usage = streams.usage("site1", time.strftime("%Y-%m", time.gmtime()))
log.append_many([AppendTo(job, [new(JobRequested(job_type="noop", site_id="site1",
                                                 user_id="u9")),
                                new(JobStarted(attempt=1, worker_id="appender"))], 0)])
print("READY", flush=True)
deadline = time.monotonic() + 30
for n in range(count):
    if time.monotonic() > deadline:
        break
    other = str(uuid7())
    log.append_many([  # one append over two streams: an export never holds half of it
        AppendTo(streams.job(other), [new(JobRequested(job_type="noop", site_id="site1",
                                                       user_id="u9"))], 0),
        AppendTo(usage, [new(QuotaReserved(job_id=other))], -1),
    ])
    log.append_many([AppendTo(job, [new(JobProgressed(progress=n % 101,
                                                      message=f"step {n}"))], n + 2)])
log.close()
print("DONE", flush=True)
"""


@contextmanager
def appending(data: Path, job_id: str, count: int = 100_000) -> Iterator[subprocess.Popen[str]]:
    """Another OS process appending to `data` (bounded in count and time); killed on exit.

    It starts job `job_id` (requested, started) and then, in turns, appends a progress
    event to it and a new job's `requested` with its quota (one append, two streams).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(data), job_id, str(count)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=30), "the appender did not start"
        line = proc.stdout.readline()
        assert line == "READY\n", line + (proc.stderr.read() if proc.stderr else "")
        yield proc
    finally:
        proc.kill()
        proc.communicate()


# -- the timeline and the summary ------------------------------------------------------


def test_audit_prints_the_timeline_and_summary_of_a_retried_job(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "audit", built.flaky, "--data", str(built.data))
    assert code == 0, err
    assert err == ""
    assert f"job {built.flaky}  type flaky  site site1  user user1  status completed" in out
    rows = [line.split() for line in out.splitlines()]
    rows = [row for row in rows if len(row) > 4 and row[0].isdigit() and row[1].isdigit()]
    assert [row[0] for row in rows] == [str(v) for v in range(1, len(rows) + 1)]
    assert [row[1] for row in rows] == [str(e["position"]) for e in built.flaky_events]
    assert [row[3] for row in rows] == [e["type"] for e in built.flaky_events]
    assert rows[0][3] == "requested" and rows[-1][3] == "completed"
    assert "ProcessingError" in out and "flaky failure" in out
    assert "Broken: the input is broken (final)" in out
    assert "manual: a new round, by boss" in out
    assert "manual (by boss)" in out
    assert "attempt 1 (round 2)" in out
    assert "attempts    3 in 2 rounds" in out
    assert "retries     1 automatic, 1 manual" in out
    assert "round 1 attempt 1" in out and "round 2 attempt 1" in out
    assert "result      10 bytes of JSON" in out  # {"runs":3}
    assert "+" in out and " ms" in out  # time between steps


def test_audit_json_has_the_api_events_and_the_summary(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "audit", built.flaky, "--data", str(built.data), "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["events"] == built.flaky_events, "the same events the API shows"
    job = answer["job"]
    assert job["job_id"] == built.flaky and job["site_id"] == "site1"
    assert job["status"] == "completed" and job["version"] == len(built.flaky_events)
    summary = answer["summary"]
    assert summary["status"] == "completed" and summary["rounds"] == 2
    attempts = summary["attempts"]
    assert [(a["round"], a["attempt"], a["outcome"]) for a in attempts] == [
        (1, 1, "failed"),
        (1, 2, "failed"),
        (2, 1, "completed"),
    ]
    assert [a["error_code"] for a in attempts] == ["ProcessingError", "Broken", None]
    assert all(a["duration_ms"] >= 0 and a["worker_id"] for a in attempts)
    retries = summary["retries"]
    assert [(r["manual"], r["after_error"]) for r in retries] == [
        (False, "ProcessingError"),
        (True, "Broken"),
    ]
    assert retries[0]["by"] == attempts[0]["worker_id"] and retries[1]["by"] == "boss"
    assert summary["total_ms"] >= sum(a["duration_ms"] for a in attempts)
    assert summary["ended_at"] == job["completed_at"]
    assert summary["result_bytes"] == len(b'{"runs":3}')
    assert summary["cancellation"] is None


def test_audit_says_who_cancelled(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "audit", built.hung, "--data", str(built.data), "--json")
    assert code == 0
    summary = json.loads(out)["summary"]
    assert summary["status"] == "cancelled"
    assert summary["cancellation"]["requested_by"] == "user1"
    assert summary["cancellation"]["by"] == "user1"
    assert [a["outcome"] for a in summary["attempts"]] == ["cancelled"]

    code, out, _ = run_cli(capsys, "audit", built.cancelled, "--data", str(built.data))
    assert code == 0
    assert "cancelled   cancelled by boss at " in out
    assert "attempts    0" in out
    types = [e["type"] for e in json.loads(_json(capsys, built.cancelled, built.data))["events"]]
    assert types == ["requested", "cancelled"]


def _json(capsys: pytest.CaptureFixture[str], job_id: str, data: Path) -> str:
    code, out, err = run_cli(capsys, "audit", job_id, "--data", str(data), "--json")
    assert code == 0, err
    return out


def test_audit_of_an_evaluation_job(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "audit", built.evaluation, "--data", str(built.data))
    assert code == 0
    assert "type ai_evaluation" in out and "metadata" in out and "lead_1" in out
    assert "status      completed" in out


# -- sites -----------------------------------------------------------------------------


def test_operators_see_every_site_and_site_narrows(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "audit", built.other_site, "--data", str(built.data))
    assert code == 0 and "site site2" in out
    code, out, err = run_cli(
        capsys, "audit", built.other_site, "--data", str(built.data), "--site", "site1"
    )
    assert code == 1 and out == ""
    assert err == f"jobtrail audit: no such job {built.other_site} in site site1\n"
    code, out, _ = run_cli(
        capsys, "audit", built.other_site.upper(), "--data", str(built.data), "--site", "site2"
    )
    assert code == 0 and built.other_site in out, "uppercase hex is read as lowercase"


# -- exit codes --------------------------------------------------------------------------


def test_no_such_job_is_1(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(uuid7())
    code, out, err = run_cli(capsys, "audit", missing, "--data", str(built.data))
    assert (code, out) == (1, "")
    assert err == f"jobtrail audit: no such job {missing}\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["not-a-uuid"], "job id must be a UUID"),
        (["../../etc/passwd"], "job id must be a UUID"),
        (["{job}", "--site", "bad site"], "site id must be"),
        (["{job}", "--bogus"], "unrecognized arguments"),
        ([], "required: JOB_ID"),
    ],
)
def test_bad_usage_is_2(
    built: Built, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    argv = [a.replace("{job}", built.flaky) for a in argv]
    code, out, err = run_cli(capsys, "audit", *argv, "--data", str(built.data))
    assert code == 2 and out == ""
    assert says in err


def test_a_missing_or_foreign_data_directory_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = str(uuid7())
    code, _, err = run_cli(capsys, "audit", job, "--data", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "audit", job, "--data", str(tmp_path / "foreign"))
    assert code == 2 and "is not a jobtrail data directory" in err
    assert not (tmp_path / "foreign" / "feed").exists(), "nothing was created"


def test_data_defaults_to_jobtrail_data(
    built: Built, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBTRAIL_DATA", str(built.data))
    code, out, _ = run_cli(capsys, "audit", built.completed)
    assert code == 0 and "status      completed" in out


def test_help_describes_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "audit", "--help")
    assert code == 0
    for flag in ("JOB_ID", "--data", "--site", "--json", "exit status"):
        assert flag in out
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "audit" in out


# -- beside a live appender --------------------------------------------------------------


def test_audit_beside_an_appender_in_another_process(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(built.data, data)
    job = str(uuid7())
    seen: list[int] = []
    with appending(data, job):
        deadline = time.monotonic() + 5
        while len(seen) < 10 or (seen[-1] <= seen[0] and time.monotonic() < deadline):
            out = _json(capsys, job, data)
            versions = [e["version"] for e in json.loads(out)["events"]]
            assert versions == list(range(1, len(versions) + 1)), "a dense prefix"
            seen.append(len(versions))
    assert seen == sorted(seen) and seen[-1] > seen[0], "the history grew while audited"
    code, _, _ = run_cli(capsys, "audit", built.flaky, "--data", str(data))
    assert code == 0
