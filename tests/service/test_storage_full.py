"""A store that cannot be written answers 503 StorageUnavailable and keeps nothing partial."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from eventstore import AppendTo, RecordedEvent
from eventstore.errors import OutcomeUnknown
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.verify import verify
from service.app import create_app
from service.auth import Principal, issue_token
from service.settings import Settings
from tests.uvicorn_client import served_client

REPO = Path(__file__).resolve().parents[2]
SECRET = "a-test-secret-of-more-than-32-bytes-0123456789"


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))


@pytest.mark.slow
def test_a_full_disk_is_503_and_leaves_only_acknowledged_jobs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JOBTRAIL_SECRET": SECRET,
        "JOBTRAIL_HANDLERS": "tests.service.noop_handlers",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--data", str(data), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_limit_file_size,
    )
    accepted: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {
            "Authorization": f"Bearer {issue_token(SECRET, Principal('s1', 'u1', 'member'), 600)}"
        }
        body = {"type": "noop", "params": {"pad": "x" * 8000}}
        refused = None
        for _ in range(40):
            r = httpx.post(f"{base}/api/jobs", json=body, headers=headers, timeout=10)
            if r.status_code == 202:
                accepted.append(r.json()["job_id"])
                continue
            refused = r
            break
        assert refused is not None, "the limit was never reached"
        assert refused.status_code == 503 and refused.json()["error"] == "StorageUnavailable"
        assert "retry-after" in refused.headers
        assert "Traceback" not in refused.text
        page = httpx.get(f"{base}/api/jobs?limit=500", headers=headers).json()
        assert sorted(j["job_id"] for j in page["jobs"]) == sorted(accepted)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert accepted
    report = verify(data)
    assert report.ok and not [f for f in report.findings if f.kind != "set_aside"], report.findings
    log = FileLog(data, readonly=True)
    requested = [e for page in log.iter_all() for e in page if e.type == "requested"]
    assert sorted(e.stream[4:] for e in requested) == sorted(accepted)


@pytest.mark.anyio
async def test_an_append_of_unknown_outcome_is_503_and_says_so(tmp_path: Path) -> None:
    """When two commit processes died holding a creation, the answer must not claim that
    nothing was written: it may have been."""
    data = tmp_path / "data"
    settings = Settings(data=data, secret=SECRET, job_types=frozenset({"noop"}))
    async with open_file_store(data) as store:

        async def lost(batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
            raise OutcomeUnknown("two commit processes ended with this append in hand")

        store.append_many = lost  # type: ignore[method-assign]
        async with served_client(create_app(store, settings)) as client:
            token = issue_token(SECRET, Principal("s1", "u1", "member"), 600)
            r = await client.post(
                "/api/jobs", json={"type": "noop"}, headers={"Authorization": f"Bearer {token}"}
            )
    assert r.status_code == 503
    assert r.json()["error"] == "StorageUnavailable"
    assert "unknown" in r.json()["message"] and "nothing was written" not in r.json()["message"]
    assert "retry-after" in r.headers
