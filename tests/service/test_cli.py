"""`jobtrail token` and `jobtrail serve` as a user runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from eventstore.filelog import FileLog
from service.auth import load_or_create_secret, verify_token
from service.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_token_prints_a_token_signed_with_the_data_directorys_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBTRAIL_SECRET", raising=False)
    data = tmp_path / "data"
    FileLog(data).close()
    assert main(["token", "--data", str(data), "--site", "s1", "--user", "u1", "--ttl", "90m"]) == 0
    token = capsys.readouterr().out.strip()
    assert "\n" not in token
    who = verify_token(load_or_create_secret(data), token)
    assert (who.site_id, who.user_id, who.role) == ("s1", "u1", "member")
    assert (data / "secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--site", "s1", "--user", "u1", "--ttl", "soon"],
        ["token", "--site", "bad site", "--user", "u1"],
        ["token", "--site", "s1"],
        ["token", "--site", "s1", "--user", "u1", "--role", "owner"],
    ],
)
def test_token_usage_errors_exit_2(
    tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBTRAIL_SECRET", raising=False)
    data = tmp_path / "data"
    FileLog(data).close()
    assert main([*argv, "--data", str(data)]) == 2


def test_token_for_a_missing_data_directory_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBTRAIL_SECRET", raising=False)
    argv = ["token", "--data", str(tmp_path / "none"), "--site", "s", "--user", "u"]
    assert main(argv) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_answers_a_token_made_by_token(tmp_path: Path) -> None:
    data, port = tmp_path / "data", _free_port()
    env = {k: v for k, v in os.environ.items() if k != "JOBTRAIL_SECRET"}
    env["PYTHONPATH"] = str(REPO)
    handlers = tmp_path / "my_handlers.py"
    handlers.write_text(
        "from worker import Handlers\nhandlers = Handlers()\n\n"
        "@handlers.job('call_analysis')\nasync def run(ctx, params):\n    return {}\n"
    )
    cmd = [sys.executable, "-m", "service.cli", "serve", "--data", str(data), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--handlers", str(handlers)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        token = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "token",
                "--data",
                str(data),
                "--site",
                "s1",
                "--user",
                "u1",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{base}/api/jobs", json={"type": "call_analysis"}, headers=headers)
        assert r.status_code == 202, r.text
        got = httpx.get(f"{base}{r.json()['poll_url']}", headers=headers)
        assert got.json()["job_type"] == "call_analysis"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
