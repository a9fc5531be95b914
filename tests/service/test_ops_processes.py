"""The monthly quota across two real `jobtrail serve` processes on one data directory."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.auth import Principal, issue_token
from tests.service.test_ops_api import LEAD

REPO = Path(__file__).resolve().parents[2]
SECRET = "two-processes-share-this-secret-0123456"  # 40 characters


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{base} did not become healthy")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[list[str]]:
    """Two serve processes on one data directory, started one after the other."""
    data = tmp_path / "data"
    env = {**os.environ, "JOBTRAIL_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for n in range(2):
            port = _free_port()
            log = (tmp_path / f"serve{n}.log").open("wb")
            cmd = [sys.executable, "-m", "service.cli", "serve", "--data", str(data)]
            proc = subprocess.Popen(
                [*cmd, "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=log
            )
            log.close()
            procs.append(proc)
            bases.append(f"http://127.0.0.1:{port}")
            _wait_healthy(bases[-1], proc)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_two_serve_processes_accept_exactly_the_limit(two_servers: list[str]) -> None:
    token = issue_token(SECRET, Principal("site1", "user1", "member"), 3600)
    headers = {"Authorization": f"Bearer {token}", "X-Site-Id": "site1", "X-User-Id": "user1"}
    leads = [f"lead_{i}" for i in range(50)]

    async def run() -> Counter[int]:
        clients = [httpx.AsyncClient(base_url=base, timeout=60) for base in two_servers]
        try:
            for i, lead in enumerate(leads):  # each lead saved through either process
                r = await clients[i % 2].put(f"/api/ops/leads/{lead}", json=LEAD, headers=headers)
                assert r.status_code == 201, r.text
            answers = await asyncio.gather(
                *(
                    clients[i % 2].post(f"/api/ops/leads/{lead}/ai-evaluation", headers=headers)
                    for i, lead in enumerate(leads)
                )
            )
            counts = Counter(r.status_code for r in answers)
            for r in answers:
                if r.status_code == 429:
                    assert r.json()["usage"]["used"] == 20
            for client in clients:
                usage = (await client.get("/api/usage", headers=headers)).json()
                assert usage["used"] == 20 and usage["remaining"] == 0
            return counts
        finally:
            for client in clients:
                await client.aclose()

    assert asyncio.run(run()) == {201: 20, 429: 30}
