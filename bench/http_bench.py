"""The HTTP benchmark (`make bench ONLY=http`): the service against a bare Starlette app.

Both run under the same uvicorn settings and take the same load from wrk (Debian's,
installed here if missing) with 64 connections, in alternating rounds. Beside them, the
`floor` app does only the store's part of a creation, with no framework or service: its
rate bounds any service over the file store (reported under `store_floor`). SSE figures
come from 1,000 subscribers of /api/events held by four client processes.
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

from bench.http_diagnosis import RECORD, write_new_file
from bench.http_servers import SECRET
from bench.http_sse_child import Report
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
    warmup: int = 10  # posted first, not counted (the first ones pay for a full GC pass)
    event_gap: float = 0.05
    grace: float = 30.0  # after the last POST, for every subscriber to have every event


QUICK = Plan(seconds=1.0, rounds=1, subscribers=100, client_processes=2, events=10)


PARTS = ("post", "get", "sse")
PARTS_VARIABLE = "JOBTRAIL_BENCH_HTTP"
"""Comma-separated parts to measure (default all): a faster loop while working on one."""


def run(ctx: Context) -> Result:
    plan = QUICK if ctx.quick else Plan()
    parts = _parts()
    wrk = _ensure_wrk() if {"post", "get"} & parts else ""
    with (
        scratch_dir(ctx, "http") as tmp,
        _server(ctx, "bare", tmp) as bare,
        _server(ctx, "jobtrail", tmp) as served,
        _server(ctx, "floor", tmp) as floor,
    ):
        token = issue_token(SECRET, Principal("bench", "admin1", "admin"), 3600)
        job_id = httpx.post(
            f"{served.url}/api/jobs", json={"type": "noop"}, headers=_auth(token)
        ).json()["job_id"]
        scripts = _scripts(tmp, token)
        disk = {"new_file_us_before": _new_file_us(tmp / "probe-before")}
        runs: dict[str, list[tuple[float, float]]] = {}
        sides = [
            (f"{side}_{method}", f"{server.url}{path}", scripts[method])
            for method, path in (("post", "/api/jobs"), ("get", f"/api/jobs/{job_id}"))
            if method in parts
            for side, server in (("bare", bare), ("jobtrail", served))
        ]
        if "post" in parts:  # the store's own bound on creations, beside the others
            sides.append(("floor_post", f"{floor.url}/api/jobs", scripts["post"]))
        for r in range(plan.rounds if sides else 0):
            shift = r % len(sides)
            for name, url, script in sides[shift:] + sides[:shift]:
                runs.setdefault(name, []).append(_wrk(wrk, url, script, plan))
        disk["new_file_us_after"] = _new_file_us(tmp / "probe-after")
        sse = _sse(ctx, plan, served, token) if "sse" in parts else None
    rate = {k: median([v[0] for v in vs]) for k, vs in runs.items()}
    p99 = {k: median([v[1] for v in vs]) for k, vs in runs.items()}
    figures: list[Figure] = []
    if "post" in parts:
        figures.append(
            figure(
                "durable job creations/s ÷ bare POST/s",
                ratio(rate["jobtrail_post"], rate["bare_post"]),
                "ratio",
                ">= 0.5",
            )
        )
    if "get" in parts:
        figures.append(
            figure(
                "polls/s ÷ bare GET/s",
                ratio(rate["jobtrail_get"], rate["bare_get"]),
                "ratio",
                ">= 0.7",
            )
        )
    if "post" in parts:
        figures.append(
            figure(
                "p99 of creation ÷ bare POST p99",
                ratio(p99["jobtrail_post"], p99["bare_post"]),
                "ratio",
                "<= 3",
            )
        )
    if sse is not None:
        figures += [
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
        "store_floor": _floor(rate, p99) if "post" in parts else None,
        "disk": disk,
        "load": f"wrk -t2 -c{plan.connections} -d{int(plan.seconds)}s, {plan.rounds} rounds",
        "parts": sorted(parts),
    }
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "python": sys.version.split()[0]}
    return Result(figures, baseline, meta)


def _floor(rate: dict[str, float], p99: dict[str, float]) -> dict[str, float]:
    """The creation figures of the `floor` app, the store's part of a creation alone: no
    service over the file store can do better on this machine (bench/http_servers.py)."""
    return {
        "creations_per_s_ratio": ratio(rate["floor_post"], rate["bare_post"]),
        "p99_ratio": ratio(p99["floor_post"], p99["bare_post"]),
    }


def _new_file_us(directory: Path, count: int = 500) -> float:
    """Wall time per new small file in `directory`, as a new job's log is made.

    Every creation makes one, and the cost swings by forty times on this machine's ext4
    (without a journal) for minutes after many files were removed: this tells whether a
    run was measured in such a spell (docs/performance.md, HTTP service).
    """
    directory.mkdir()
    started = time.perf_counter()
    for n in range(count):
        write_new_file(directory / f"{n}.log", RECORD)
    return (time.perf_counter() - started) / count * 1e6


def _parts() -> set[str]:
    """The parts named in JOBTRAIL_BENCH_HTTP (unset or empty: all of them)."""
    named = os.environ.get(PARTS_VARIABLE, "").strip() or ",".join(PARTS)
    chosen = {p.strip() for p in named.split(",")}
    unknown = chosen - set(PARTS)
    if unknown or not chosen:
        raise ValueError(f"{PARTS_VARIABLE}: one or more of {', '.join(PARTS)}, not {unknown}")
    return chosen


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
        [sys.executable, "-m", "bench.http_servers", kind, str(port), str(tmp / kind)],
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
    """Open the subscribers, weigh them, then time events from POST to every client.

    A few warm-up events go first: the first events after a thousand connections opened
    meet the full garbage collection their new objects set due (about 150 tracked objects
    per stream), once. The clients wait for every event (or the grace time) after the last
    POST, however long the POSTs took; a stream that ends is resumed with `Last-Event-ID`
    and what it brings counts (with its real arrival time), so `missing` is what no
    subscriber ever received.
    """
    port = served.url.rsplit(":", 1)[1]
    time.sleep(0.5)
    before = _rss_kb(served.pid)
    per = plan.subscribers // plan.client_processes
    env = {**os.environ, "PYTHONPATH": str(ctx.repo)}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.http_sse_child", port, token, str(per)],
            cwd=ctx.repo,
            env=env,
            stdin=subprocess.PIPE,
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
            for n in range(plan.warmup + plan.events):
                if n == plan.warmup:
                    started = time.monotonic()
                t0 = time.monotonic()
                job_id = client.post("/api/jobs", json={"type": "noop"}).json()["job_id"]
                if n >= plan.warmup:
                    sent[job_id] = t0
                time.sleep(plan.event_gap)
        posting = time.monotonic() - started
        reports = []
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"STOP {plan.warmup + plan.events} {plan.grace}\n")
            child.stdin.flush()
        for child in children:
            out, _ = child.communicate(timeout=plan.grace + 60)
            reports.append(msgspec.json.decode(out.strip().splitlines()[-1], type=Report))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    latencies: list[float] = []
    missing = 0
    for report in reports:
        for job_id, t0 in sent.items():
            arrivals = report.seen.get(job_id, [])
            missing += per - len(arrivals)
            latencies.extend((at - t0) * 1000 for at in arrivals)
    repeated = sum(r.repeated for r in reports)
    p99 = percentile(latencies, 99) if not missing and not repeated else float("inf")
    return {
        "subscribers": per * plan.client_processes,
        "client_processes": plan.client_processes,
        "events": plan.events,
        "warmup_events": plan.warmup,
        "posting_s": round(posting, 2),
        "deliveries": len(latencies),
        "missing": missing,
        "repeated_or_out_of_order": repeated,
        "reconnects": sum(r.reconnects for r in reports),
        "failed_reconnects": sum(r.failed_reconnects for r in reports),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": p99,
        "max_ms": max(latencies, default=float("nan")),
        "server_rss_kb_before": before,
        "server_rss_kb_after": after,
        "kb_per_subscriber": (after - before) / (per * plan.client_processes),
    }
