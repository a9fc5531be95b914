"""`make bench ONLY=worker`: the worker against SqliteHuey and RQ, measured in the same run.

Throughput: the same no-op job through each queue, one worker process each, N jobs made
by a producer process as fast as it goes; jobs/s is N ÷ (just before the first enqueue →
the producer seeing the last result stored). jobtrail: `jobtrail worker --concurrency C`
on a fresh data directory, the producer appending one `JobRequested` per job from several
tasks and following the feed. Huey: SqliteHuey with its defaults, `huey_consumer -w 1 -k
thread`. RQ: `rq worker` (forks a work horse per job) on a fresh redis-server with Redis's
defaults. Every side gets a fresh worker and store per round, one warm-up job before the
clock starts, and the sides alternate in rotating order.

Pickup: a paced load into an idle worker, started.recorded_at − requested.recorded_at
from the job streams; Huey and RQ are measured alike from their tasks' start times.

Rules: `extract_text` of a lead's three documents (one PDF) + `evaluate_rules`, in process.

Where jobtrail's time goes (baseline, no target): CPU per job of the worker and producer
processes (user and system), the gaps between each job's events and the worker's append
acknowledgements (its log lines, written as each append returns), and in the same rounds
a split run: job creation alone, then one worker draining that backlog alone. The
cross-process feed lock is timed by `python -m bench.worker_lockdiag` (not run here).
Round directories are removed only at the end: on this VM's ext4 (no journal, discard)
creating files right after thousands were deleted is several times slower.

Huey and RQ live in their own virtualenv (bench/tmp-peers-venv, made here from PyPI and
kept between runs); redis-server comes from Debian (apt-get) when missing. A peer that
cannot be had is skipped with a note (its figure is then n/a and misses).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from bench import worker_rules
from bench.children import Child, spawn, stop
from bench.measure import Context, median, percentile, ratio, scratch_dir, summary
from bench.report import Figure, Result, figure
from eventstore.filelog import FileLog

CHILD: Final = "bench.worker_child"
PEER: Final = "bench.worker_peer"
HANDLERS: Final = "bench/worker_noop_handlers.py"
PEERS_VENV: Final = "bench/tmp-peers-venv"  # the hyphen keeps mypy and ruff out of it
PEER_PACKAGES: Final = ("huey", "rq", "redis")
WARMUP_TIMEOUT: Final = 60.0
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and rounds; `quick` shrinks them for a smoke run."""

    rounds: int = 8
    jobs: int = 2000  # per burst, jobtrail and Huey
    rq_jobs: int = 200  # RQ forks a process per job (about 30 jobs/s here): fewer, same rate
    concurrency: int = 16  # jobtrail worker --concurrency
    submitters: int = 16  # the jobtrail producer's concurrent tasks
    paced_rounds: int = 2
    paced_jobs: int = 300
    paced_rate: float = 100.0
    rq_paced_jobs: int = 50
    rq_paced_rate: float = 10.0  # RQ cannot keep up with 100/s: its queue would only grow
    rules_runs: int = 500
    install_peers: bool = True  # pip; apt-get too when not quick


QUICK: Final = Plan(
    rounds=1, jobs=300, rq_jobs=30, paced_rounds=1, paced_jobs=60, rq_paced_jobs=10, rules_runs=30
)
PARTS: Final = "jobtrail_parts"  # not a figure: creation alone, then the worker alone


@dataclass
class Peers:
    """Where the peers' commands are; None for a peer that could not be installed."""

    python: Path | None = None
    redis_server: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        assert self.python is not None
        return self.python.parent

    @property
    def sides(self) -> list[str]:
        out = ["jobtrail"]
        if self.python is not None:
            out.append("huey")
            if self.redis_server is not None:
                out.append("rq")
        return out


def run(ctx: Context) -> Result:
    plan = QUICK if ctx.quick else Plan()
    load_before = os.getloadavg()
    started = time.monotonic()
    peers = _ensure_peers(ctx, plan)
    setup_s = time.monotonic() - started
    rules = worker_rules.measure(plan.rules_runs)
    with scratch_dir(ctx, "worker") as tmp:
        failures: dict[str, str] = {}
        bursts = _throughput(ctx, plan, peers, tmp, failures)
        paced = _pickup(ctx, plan, peers, tmp, failures)
    parts = bursts.pop(PARTS, [])
    rates = {side: [r["jobs_per_s"] for r in runs] for side, runs in bursts.items()}
    jobtrail = median(rates["jobtrail"])
    pickups = [x for r in paced.get("jobtrail", []) for x in r["pickup_ms"]]
    c = plan.concurrency
    figures: list[Figure] = [
        figure(
            f"no-op jobs/s end to end ÷ SqliteHuey's (1 worker each, jobtrail --concurrency {c})",
            ratio(jobtrail, median(rates.get("huey", []))),
            "ratio",
            ">= 1.5",
        ),
        figure(
            "no-op jobs/s end to end ÷ RQ's (1 worker each)",
            ratio(jobtrail, median(rates.get("rq", []))),
            "ratio",
            ">= 3",
        ),
        figure(
            f"pickup p50, requested → started ({plan.paced_rate:g} jobs/s, idle worker)",
            percentile(pickups, 50),
            "ms",
            "<= 20",
        ),
        figure(
            f"pickup p99, requested → started ({plan.paced_rate:g} jobs/s, idle worker)",
            percentile(pickups, 99),
            "ms",
            "<= 100",
        ),
        figure(
            "rules evaluation, lead with 3 documents (1 PDF), p99",
            rules["p99_ms"],
            "ms",
            "<= 50",
        ),
    ]
    baseline: dict[str, Any] = {
        "jobs_per_s": {side: summary(values) for side, values in rates.items()},
        "jobtrail_burst": _burst_diagnosis(bursts["jobtrail"], plan),
        "jobtrail_parts": _parts_summary(parts),
        "peer_burst": {
            side: _peer_burst_summary(runs) for side, runs in bursts.items() if side != "jobtrail"
        },
        "pickup_ms": {side: _pickup_summary(runs) for side, runs in paced.items()},
        "rules": rules,
        "failed_rounds": failures,
        "notes": {**_notes(plan), **peers.notes},
    }
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": sys.version.split()[0],
        "quick": ctx.quick,
        "plan": asdict(plan),
        "setup_s": round(setup_s, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "settings": {side: runs[0].get("settings", {}) for side, runs in bursts.items() if runs},
    }
    return Result(figures, baseline, meta)


def _notes(plan: Plan) -> dict[str, str]:
    return {
        "jobtrail": f"jobtrail worker --concurrency {plan.concurrency}; the producer appends "
        f"from {plan.submitters} tasks, one JobRequested per append; every event fsync'd "
        "before it is acknowledged",
        "huey": "SqliteHuey defaults (WAL, synchronous FULL: each commit fsync'd); "
        "huey_consumer -w 1 -k thread; the task returns True so a result row is stored; "
        "its consumer sleeps between tasks when its poll finds the queue empty (0.1 s x "
        "1.15 per empty poll) and in SQLite's busy handler while the producer holds the "
        "write lock: peer_burst.huey.huey_idle_s sums its gaps of 50 ms or more",
        "jobtrail_parts": "not a figure: the same jobs created with no worker running "
        "(create_per_s), then one worker started on that backlog (drain_jobs_per_s, "
        "first started to last completed)",
        "rq": "rq worker (default Worker: one forked work horse per job); redis-server "
        "with Redis's defaults: RDB snapshots only (save 3600 1 300 100 60 10000, "
        "appendonly no), so nothing is fsync'd per job and an acknowledged job can be lost",
        "rq_jobs": f"RQ runs {plan.rq_jobs} jobs per burst (jobtrail and Huey {plan.jobs}) "
        "and its pickup is paced at "
        f"{plan.rq_paced_rate:g}/s: it completes about 30 jobs/s here",
    }


# -- the peers' environment -----------------------------------------------------------------


def _ensure_peers(ctx: Context, plan: Plan) -> Peers:
    peers = Peers()
    venv = ctx.repo / PEERS_VENV
    python = venv / "bin" / "python"
    if not _importable(python):
        if not plan.install_peers:
            peers.notes["skipped"] = "Huey and RQ skipped: not installed"
            return peers
        try:
            if not python.exists():
                _run([sys.executable, "-m", "venv", str(venv)], 120)
            # A quick run must stay quick without a network: few retries, a short limit.
            pip = [str(python), "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "10"]
            _run([*pip, *PEER_PACKAGES], 45 if ctx.quick else 240)
        except (subprocess.SubprocessError, OSError) as exc:
            peers.notes["skipped"] = f"Huey and RQ skipped: cannot install them ({exc})"
            return peers
        if not _importable(python):
            peers.notes["skipped"] = "Huey and RQ skipped: installed but not importable"
            return peers
    peers.python = python
    peers.redis_server = _ensure_redis(quick=ctx.quick)
    if peers.redis_server is None:
        peers.notes["skipped"] = "RQ skipped: no redis-server (apt-get install redis-server)"
    return peers


def _importable(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import huey, rq, redis"], capture_output=True, timeout=60
    )
    return probe.returncode == 0


def _run(cmd: Sequence[str], timeout: float) -> None:
    subprocess.run(cmd, capture_output=True, timeout=timeout, check=True)


def _ensure_redis(*, quick: bool) -> str | None:
    """Debian's redis-server, installed when missing (not in a quick run: no apt there)."""
    found = shutil.which("redis-server")
    if found or quick:
        return found
    for cmd in (
        ["apt-get", "install", "-y", "-qq", "redis-server"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "redis-server"],
    ):
        try:
            subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        except (subprocess.SubprocessError, OSError):
            return None
        if found := shutil.which("redis-server"):
            return found
    return None


# -- processes -------------------------------------------------------------------------------


@contextmanager
def _process(
    cmd: Sequence[str], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server-like process (a worker, redis) logging to `log`; stopped on the way out."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            yield proc
        finally:
            _halt(proc)


def _halt(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: never leave it running."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10 if sig == signal.SIGTERM else 5)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _peer_producer(
    ctx: Context, peers: Peers, argv: Sequence[str], env: dict[str, str]
) -> Iterator[Child]:
    assert peers.python is not None
    proc = subprocess.Popen(
        [str(peers.python), "-m", PEER, *argv],
        cwd=ctx.repo,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        yield Child(f"{PEER} {' '.join(argv[:2])}", proc)
    finally:
        stop(proc)


def _peer_env(ctx: Context, where: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = str(ctx.repo)
    env["BENCH_HUEY_DB"] = str(where / "huey.db")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _redis(server: str, where: Path) -> Iterator[str]:
    """A fresh redis-server on a free loopback port with Redis's default persistence."""
    port = _free_port()
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(where)]
    with _process(cmd, where, where / "redis.log") as proc:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its waited-for children (RQ's horses)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return (math.nan, math.nan)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ((utime + cutime) / CLK_TCK, (stime + cstime) / CLK_TCK)


def _cpu_since(pid: int, before: tuple[float, float]) -> dict[str, float]:
    user, system = _cpu(pid)
    return {"worker_cpu_user_s": user - before[0], "worker_cpu_sys_s": system - before[1]}


def _producer_cpu(answer: dict[str, Any]) -> dict[str, float]:
    return {
        "producer_cpu_user_s": float(answer["cpu_user_s"]),
        "producer_cpu_sys_s": float(answer["cpu_sys_s"]),
    }


def _jobtrail_cmd(ctx: Context) -> list[str]:
    script = Path(sys.executable).with_name("jobtrail")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())"]


@contextmanager
def _jobtrail_worker(
    ctx: Context, plan: Plan, where: Path
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    data = where / "data"
    FileLog(data).close()  # as `jobtrail init` makes it
    cmd = [*_jobtrail_cmd(ctx), "worker", "--data", str(data)]
    cmd += ["--concurrency", str(plan.concurrency), "--handlers", HANDLERS]
    env = {**os.environ, "PYTHONPATH": str(ctx.repo)}
    with _process(cmd, ctx.repo, where / "worker.log", env) as proc:
        yield data, proc


@contextmanager
def _peer_worker(
    ctx: Context, peers: Peers, side: str, where: Path
) -> Iterator[tuple[list[str], subprocess.Popen[bytes], dict[str, str]]]:
    env = _peer_env(ctx, where)
    with ExitStack() as stack:
        if side == "huey":
            cmd = [str(peers.bin / "huey_consumer"), "bench.worker_peer_tasks.huey"]
            cmd += ["-w", "1", "-k", "thread"]
            extra: list[str] = []
        else:
            assert peers.redis_server is not None
            url = stack.enter_context(_redis(peers.redis_server, where))
            cmd = [str(peers.bin / "rq"), "worker", "-u", url]
            extra = ["--redis", url]
        proc = stack.enter_context(_process(cmd, ctx.repo, where / "worker.log", env))
        yield extra, proc, env


# -- throughput ----------------------------------------------------------------------------


def _throughput(
    ctx: Context, plan: Plan, peers: Peers, tmp: Path, failures: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Burst rounds of every side, rotating the order, while a round still fits the budget."""
    sides: dict[str, Callable[[Path], dict[str, Any]]] = {
        "jobtrail": lambda where: _jobtrail_burst(ctx, plan, where),
        "huey": lambda where: _peer_burst(ctx, plan, peers, "huey", where),
        "rq": lambda where: _peer_burst(ctx, plan, peers, "rq", where),
        PARTS: lambda where: _jobtrail_parts(ctx, plan, where),
    }
    names = [*peers.sides, PARTS]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    reserve = 20.0 + plan.paced_rounds * (plan.paced_jobs / plan.paced_rate * 2 + 15)
    longest = 0.0
    for r in range(plan.rounds):
        if r and not ctx.budget.fits(longest * 1.2 + reserve):
            break
        began = time.monotonic()
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            # Kept until the end (scratch_dir removes it): on this VM's ext4 (no journal)
            # creating a file scans past the inodes freed in the last 30 s or so, so
            # deleting a round's 2,000 stream files here would slow the next job creations.
            where = tmp / f"burst-{name}-{r}"
            where.mkdir()
            try:
                runs[name].append(sides[name](where))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                failures[f"burst {name} round {r + 1}"] = _failure(exc)
        longest = max(longest, time.monotonic() - began)
    return runs


def _jobtrail_burst(ctx: Context, plan: Plan, where: Path) -> dict[str, Any]:
    argv = ["burst", "--jobs", str(plan.jobs), "--tasks", str(plan.submitters)]
    with _jobtrail_worker(ctx, plan, where) as (data, worker):
        argv += ["--data", str(data), "--limit", str(int(ctx.budget.left()) + 30)]
        with spawn(CHILD, [argv], ctx.repo) as (child,):
            child.recv(WARMUP_TIMEOUT)
            cpu = _cpu(worker.pid)
            child.send({"go": True})
            answer = child.recv(plan.jobs / 50 + 60)
            worker_cpu = _cpu_since(worker.pid, cpu)
    jobs: dict[str, list[float]] = answer["jobs"]
    _check(len(jobs) == plan.jobs, f"jobtrail finished {len(jobs)} of {plan.jobs} jobs")
    return {
        "jobs_per_s": plan.jobs / answer["seconds"],
        "seconds": answer["seconds"],
        "submit_seconds": answer["submit_seconds"],
        **worker_cpu,
        **_producer_cpu(answer),
        **_job_timings(jobs, _worker_log(where / "worker.log")),
    }


def _jobtrail_parts(ctx: Context, plan: Plan, where: Path) -> dict[str, Any]:
    """Job creation with no worker running, then one worker draining that backlog."""
    data = where / "data"
    limit = ["--limit", str(int(ctx.budget.left()) + 30)]
    argv = ["create", "--data", str(data), "--jobs", str(plan.jobs)]
    with spawn(CHILD, [[*argv, "--tasks", str(plan.submitters), *limit]], ctx.repo) as (child,):
        created = child.recv(plan.jobs / 50 + 60)
    with _jobtrail_worker(ctx, plan, where) as (_, worker):
        argv = ["drain", "--data", str(data), "--jobs", str(plan.jobs), *limit]
        with spawn(CHILD, [argv], ctx.repo) as (child,):
            drained = child.recv(plan.jobs / 50 + 60)
    jobs: dict[str, list[float]] = drained["jobs"]
    _check(len(jobs) == plan.jobs, f"jobtrail drained {len(jobs)} of {plan.jobs} jobs")
    first_start = min(s for _, s, _ in jobs.values())
    last_done = max(c for _, _, c in jobs.values())
    timings = _job_timings(jobs, _worker_log(where / "worker.log"))
    return {
        "create_per_s": plan.jobs / created["seconds"],
        "create_cpu_user_ms_per_job": created["cpu_user_s"] * 1000 / plan.jobs,
        "create_cpu_sys_ms_per_job": created["cpu_sys_s"] * 1000 / plan.jobs,
        "drain_jobs_per_s": plan.jobs / (last_done - first_start),
        "drain_started_to_completed_ms": timings["started_to_completed_ms"],
        "drain_claim_append_ack_ms": timings["claim_append_ack_ms"],
        "drain_completion_append_ack_ms": timings["completion_append_ack_ms"],
        "drain_worker_events_per_commit": timings["worker_events_per_commit"],
    }


def _peer_burst(ctx: Context, plan: Plan, peers: Peers, side: str, where: Path) -> dict[str, Any]:
    jobs = plan.jobs if side == "huey" else plan.rq_jobs
    with _peer_worker(ctx, peers, side, where) as (extra, worker, env):
        argv = ["burst", side, "--jobs", str(jobs), *extra]
        argv += ["--limit", str(int(ctx.budget.left()) + 30)]
        with _peer_producer(ctx, peers, argv, env) as producer:
            ready = producer.recv(WARMUP_TIMEOUT)
            cpu = _cpu(worker.pid)
            producer.send({"go": True})
            answer = producer.recv(jobs / 5 + 60)
            worker_cpu = _cpu_since(worker.pid, cpu)
    return {
        "jobs_per_s": jobs / answer["seconds"],
        "jobs": jobs,
        "seconds": answer["seconds"],
        "submit_seconds": answer["submit_seconds"],
        **worker_cpu,
        **_producer_cpu(answer),
        **(_huey_idle(where / "worker.log") if side == "huey" else {}),
        "settings": ready.get("settings", {}),
    }


_HUEY_RAN: Final = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] INFO:huey:.* executed in "
)
HUEY_IDLE_GAP: Final = 0.05


def _huey_idle(log: Path) -> dict[str, float]:
    """Time Huey's consumer spent between two tasks in gaps of 50 ms or more.

    Two causes, both Huey's defaults at work: its worker polls SQLite and, each time it
    finds the queue empty, sleeps 0.1 s times 1.15 per empty poll in a row (so the first
    measured task waits up to about 0.1 s after the warm-up); and SQLite's busy handler
    sleeps while the producer holds the write lock, each enqueue being a commit (the
    producer can starve the consumer for hundreds of ms). Counted from the warm-up task.
    """
    times = [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in log.read_text(errors="replace").splitlines()
        if (m := _HUEY_RAN.match(line))
    ]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b - a >= HUEY_IDLE_GAP]
    return {"huey_idle_gaps": len(gaps), "huey_idle_s": sum(gaps)}


# -- pickup --------------------------------------------------------------------------------


def _pickup(
    ctx: Context, plan: Plan, peers: Peers, tmp: Path, failures: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    names = peers.sides
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    each = plan.paced_jobs / plan.paced_rate + 10
    for r in range(plan.paced_rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if r and not ctx.budget.fits(each + 10):
                continue
            where = tmp / f"paced-{name}-{r}"
            where.mkdir()
            try:
                if name == "jobtrail":
                    runs[name].append(_jobtrail_paced(ctx, plan, where))
                else:
                    runs[name].append(_peer_paced(ctx, plan, peers, name, where))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                failures[f"paced {name} round {r + 1}"] = _failure(exc)
    return runs


def _failure(exc: BaseException) -> str:
    """A failed round, kept out of the medians and listed in the results."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _jobtrail_paced(ctx: Context, plan: Plan, where: Path) -> dict[str, Any]:
    argv = ["paced", "--jobs", str(plan.paced_jobs), "--rate", str(plan.paced_rate)]
    with _jobtrail_worker(ctx, plan, where) as (data, _):
        argv += ["--data", str(data), "--limit", str(int(ctx.budget.left()) + 30)]
        with spawn(CHILD, [argv], ctx.repo) as (child,):
            child.recv(WARMUP_TIMEOUT)
            child.send({"go": True})
            answer = child.recv(plan.paced_jobs / plan.paced_rate + 60)
    jobs: dict[str, list[float]] = answer["jobs"]
    _check(len(jobs) == plan.paced_jobs, f"jobtrail finished {len(jobs)} paced jobs")
    timings = _job_timings(jobs, _worker_log(where / "worker.log"))
    return {
        "rate": plan.paced_rate,
        "pickup_ms": [(started - requested) * 1000 for requested, started, _ in jobs.values()],
        **timings,
    }


def _peer_paced(ctx: Context, plan: Plan, peers: Peers, side: str, where: Path) -> dict[str, Any]:
    jobs, rate = (
        (plan.paced_jobs, plan.paced_rate)
        if side == "huey"
        else (plan.rq_paced_jobs, plan.rq_paced_rate)
    )
    with _peer_worker(ctx, peers, side, where) as (extra, _, env):
        argv = ["paced", side, "--jobs", str(jobs), "--rate", str(rate), *extra]
        argv += ["--limit", str(int(ctx.budget.left()) + 30)]
        with _peer_producer(ctx, peers, argv, env) as producer:
            producer.recv(WARMUP_TIMEOUT)
            producer.send({"go": True})
            answer = producer.recv(jobs / rate + 60)
    return {"rate": rate, "pickup_ms": [float(x) for x in answer["pickup_ms"]]}


# -- where jobtrail's time goes ------------------------------------------------------------

_LOG_LINE: Final = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO job ([0-9a-f-]{36}) .*? attempt=\d+ "
    r"(started|completed)"
)


def _worker_log(path: Path) -> dict[str, dict[str, float]]:
    """When the worker logged each job's claim and outcome: just after each append returned.

    The log's clock is local wall time to the millisecond (truncated).
    """
    out: dict[str, dict[str, float]] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m is not None:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.setdefault(m.group(2), {})[m.group(3)] = at
    return out


def _job_timings(
    jobs: dict[str, list[float]], logged: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Gaps between a job's events (recorded_at: when its commit was planned), commits, acks."""
    rows = sorted(jobs.values())
    if not rows:
        return {}
    ms = 1000.0
    wait = [(s - q) * ms for q, s, _ in rows]
    run = [(c - s) * ms for _, s, c in rows]
    worker_commits = len({s for _, s, _ in rows} | {c for _, _, c in rows})
    producer_commits = len({q for q, _, _ in rows})
    first_start = min(s for _, s, _ in rows)
    last_done = max(c for _, _, c in rows)
    claim_ack = [
        (logged[j]["started"] - jobs[j][1]) * ms for j in jobs if "started" in logged.get(j, {})
    ]
    done_ack = [
        (logged[j]["completed"] - jobs[j][2]) * ms for j in jobs if "completed" in logged.get(j, {})
    ]
    return {
        "requested_to_started_ms": _dist(wait),
        "started_to_completed_ms": _dist(run),
        "claim_append_ack_ms": _dist(claim_ack),
        "completion_append_ack_ms": _dist(done_ack),
        "worker_commits": worker_commits,
        "worker_events_per_commit": 2 * len(rows) / worker_commits,
        "producer_commits": producer_commits,
        "first_request_to_first_start_ms": (first_start - rows[0][0]) * ms,
        "worker_busy_s": last_done - first_start,
        "worker_jobs_per_s_while_busy": len(rows) / (last_done - first_start)
        if last_done > first_start
        else float("nan"),
        "requests_per_s_recorded": len(rows) / (rows[-1][0] - rows[0][0])
        if rows[-1][0] > rows[0][0]
        else float("nan"),
    }


def _dist(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values, default=float("nan")),
    }


_CPU_KEYS: Final = (
    "worker_cpu_user_s",
    "worker_cpu_sys_s",
    "producer_cpu_user_s",
    "producer_cpu_sys_s",
)


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over the rounds of every number (and of every number in a nested dict)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = {k: median([r[key][k] for r in runs]) for k in value}
        elif isinstance(value, int | float):
            out[key] = median([float(r[key]) for r in runs])
    return out


def _cpu_per_job(runs: list[dict[str, Any]], jobs: int) -> dict[str, float]:
    """CPU ms per job of the worker and the producer, user and system, medians of rounds."""
    return {
        key.removesuffix("_s") + "_ms_per_job": median([r[key] * 1000 / jobs for r in runs])
        for key in _CPU_KEYS
    }


def _burst_diagnosis(runs: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Medians over the rounds of each diagnostic of the jobtrail bursts."""
    out: dict[str, Any] = {"jobs": plan.jobs, "rounds": len(runs)}
    if not runs:
        return out
    out.update(_medians(runs))
    for key in _CPU_KEYS:
        out.pop(key, None)
    out.update(_cpu_per_job(runs, plan.jobs))
    out["runs"] = runs  # every round's figures, for the JSON
    return out


def _parts_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if not runs:
        return {}
    return {**_medians(runs), "runs": runs}


def _peer_burst_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if not runs:
        return {}
    jobs = runs[0]["jobs"]
    return {
        "jobs": jobs,
        "seconds": median([r["seconds"] for r in runs]),
        "submit_seconds": median([r["submit_seconds"] for r in runs]),
        **_cpu_per_job(runs, jobs),
        **{
            key: median([r[key] for r in runs])
            for key in ("huey_idle_gaps", "huey_idle_s")
            if key in runs[0]
        },
        "runs": [{k: v for k, v in r.items() if k != "settings"} for r in runs],
    }


def _pickup_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [x for r in runs for x in r["pickup_ms"]]
    out: dict[str, Any] = {
        "rate_per_s": runs[0]["rate"] if runs else float("nan"),
        "jobs": len(values),
        **_dist(values),
    }
    for key in ("started_to_completed_ms", "claim_append_ack_ms"):
        if runs and key in runs[0]:
            out[key] = {k: median([r[key][k] for r in runs]) for k in runs[0][key]}
    return out


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"benchmark workload went wrong: {what}")
