"""The HTTP benchmark (`make bench ONLY=http`): the service against a bare Starlette app.

Both run under the same uvicorn settings and take the same load from wrk (Debian's,
installed here if missing) with 64 connections, in alternating rounds. SSE figures come
from 1,000 subscribers of /api/events held by four client processes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.http_servers import SECRET
from bench.measure import Context, median, percentile, ratio, scratch_dir, summary
from bench.report import Figure, Result, figure
from service.auth import Principal, issue_token


@dataclass(frozen=True)
class Plan:
    seconds: float = 5.0  # per wrk run
    rounds: int = 3
    connections: int = 64
    subscribers: int = 1000
    client_processes: int = 4
    events: int = 60
    event_gap: float = 0.05


QUICK = Plan(seconds=1.0, rounds=1, subscribers=100, client_processes=2, events=10)


def run(ctx: Context) -> Result:
    plan = QUICK if ctx.quick else Plan()
    wrk = _ensure_wrk()
    with (
        scratch_dir(ctx, "http") as tmp,
        _server(ctx, "bare", tmp) as bare,
        _server(ctx, "jobtrail", tmp) as served,
    ):
        token = issue_token(SECRET, Principal("bench", "admin1", "admin"), 3600)
        job_id = httpx.post(
            f"{served.url}/api/jobs", json={"type": "noop"}, headers=_auth(token)
        ).json()["job_id"]
        scripts = _scripts(tmp, token)
        runs: dict[str, list[tuple[float, float]]] = {}
        sides = [
            ("bare_post", f"{bare.url}/api/jobs", scripts["post"]),
            ("jobtrail_post", f"{served.url}/api/jobs", scripts["post"]),
            ("bare_get", f"{bare.url}/api/jobs/{job_id}", scripts["get"]),
            ("jobtrail_get", f"{served.url}/api/jobs/{job_id}", scripts["get"]),
        ]
        for r in range(plan.rounds):
            shift = r % len(sides)
            for name, url, script in sides[shift:] + sides[:shift]:
                runs.setdefault(name, []).append(_wrk(wrk, url, script, plan))
        sse = _sse(ctx, plan, served, token)
    rate = {k: median([v[0] for v in vs]) for k, vs in runs.items()}
    p99 = {k: median([v[1] for v in vs]) for k, vs in runs.items()}
    figures: list[Figure] = [
        figure(
            "durable job creations/s ÷ bare POST/s",
            ratio(rate["jobtrail_post"], rate["bare_post"]),
            "ratio",
            ">= 0.5",
        ),
        figure(
            "polls/s ÷ bare GET/s", ratio(rate["jobtrail_get"], rate["bare_get"]), "ratio", ">= 0.7"
        ),
        figure(
            "p99 of creation ÷ bare POST p99",
            ratio(p99["jobtrail_post"], p99["bare_post"]),
            "ratio",
            "<= 3",
        ),
        figure(
            f"{plan.subscribers:,} SSE subscribers: append → client, p99",
            sse["p99_ms"],
            "ms",
            "<= 50",
        ),
        figure("memory per idle SSE subscriber", sse["kb_per_subscriber"], "KB", "<= 50"),
    ]
    baseline: dict[str, Any] = {
        "requests_per_s": {k: summary([v[0] for v in vs]) for k, vs in runs.items()},
        "p99_ms": {k: summary([v[1] for v in vs]) for k, vs in runs.items()},
        "sse": sse,
        "load": f"wrk -t2 -c{plan.connections} -d{int(plan.seconds)}s, {plan.rounds} rounds",
    }
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "python": sys.version.split()[0]}
    return Result(figures, baseline, meta)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ensure_wrk() -> str:
    """wrk from Debian's packages: the load generator must not be the bottleneck."""
    found = shutil.which("wrk")
    if found:
        return found
    for cmd in (
        ["apt-get", "install", "-y", "-qq", "wrk"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "wrk"],
    ):
        subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        if found := shutil.which("wrk"):
            return found
    raise RuntimeError("the http benchmark needs wrk: apt-get install wrk")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextmanager
def _server(ctx: Context, kind: str, tmp: Path) -> Iterator[Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ctx.repo)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.http_servers", kind, str(port), str(tmp / "data")],
        cwd=ctx.repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/api/jobs/x", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.1)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _scripts(tmp: Path, token: str) -> dict[str, Path]:
    post = tmp / "post.lua"
    post.write_text(
        'wrk.method = "POST"\nwrk.body = \'{"type": "noop"}\'\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    get = tmp / "get.lua"
    get.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    return {"post": post, "get": get}


_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_P99 = re.compile(r"^\s*99%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(wrk: str, url: str, script: Path, plan: Plan) -> tuple[float, float]:
    """(requests/s, p99 ms) of one wrk run; non-2xx answers fail the run."""
    out = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{plan.connections}",
            f"-d{int(plan.seconds)}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=plan.seconds + 60,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw failed answers from {url}:\n{out}")
    rate, p99 = _RATE.search(out), _P99.search(out)
    if rate is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(rate.group(1)), float(p99.group(1)) * _UNIT_MS[p99.group(2)]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _sse(ctx: Context, plan: Plan, served: Server, token: str) -> dict[str, Any]:
    """Open the subscribers, weigh them, then time events from POST to every client."""
    port = served.url.rsplit(":", 1)[1]
    time.sleep(0.5)
    before = _rss_kb(served.pid)
    hold = plan.events * plan.event_gap + 8
    per = plan.subscribers // plan.client_processes
    env = {**os.environ, "PYTHONPATH": str(ctx.repo)}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.http_sse_child", port, token, str(per), str(hold)],
            cwd=ctx.repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(plan.client_processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "READY":
                raise RuntimeError(
                    f"an SSE client failed: {child.stderr.read() if child.stderr else ''}"
                )
        time.sleep(1.0)
        after = _rss_kb(served.pid)
        sent: dict[str, float] = {}
        with httpx.Client(base_url=served.url, headers=_auth(token)) as client:
            for _ in range(plan.events):
                t0 = time.monotonic()
                job_id = client.post("/api/jobs", json={"type": "noop"}).json()["job_id"]
                sent[job_id] = t0
                time.sleep(plan.event_gap)
        latencies: list[float] = []
        missing = 0
        for child in children:
            out, _ = child.communicate(timeout=hold + 60)
            seen: dict[str, list[float]] = msgspec.json.decode(out.strip().splitlines()[-1])
            for job_id, t0 in sent.items():
                arrivals = seen.get(job_id, [])
                missing += per - len(arrivals)
                latencies.extend((at - t0) * 1000 for at in arrivals)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    p99 = percentile(latencies, 99) if not missing else float("inf")
    return {
        "subscribers": per * plan.client_processes,
        "events": plan.events,
        "deliveries": len(latencies),
        "missing": missing,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": p99,
        "max_ms": max(latencies, default=float("nan")),
        "server_rss_kb_before": before,
        "server_rss_kb_after": after,
        "kb_per_subscriber": (after - before) / (per * plan.client_processes),
    }
