"""Worker processes on one data directory: SIGKILLed at random, racing, stopped past a lease.

Every worker here is a real `jobtrail worker` OS process (`python -m service.cli worker`)
running the job types of `process_handlers.py`; the test process creates jobs by appending
`requested` to the same file store and reads the histories back. Each child's output goes
to a log file in tmp_path (the assertion messages quote its tail), and every child still
running is SIGKILLed and reaped when a test ends, however it ends.

JOBTRAIL_WORKER_KILL_ITERATIONS (default 50) and JOBTRAIL_WORKER_KILL_SEED set the kill
loop; the seed is printed and named in its assertion messages.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import (
    NO_STREAM,
    AppendTo,
    EventStore,
    MemoryStore,
    RecordedEvent,
    StorageError,
    new,
    new_event_id,
    streams,
)
from eventstore.events import (
    Event,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobLeaseRenewed,
    JobProgressed,
    JobRequested,
    JobRetried,
    JobStarted,
    event_type,
)
from eventstore.filestore import open_file_store
from projections.jobs import JobTable, JobView, load_job
from worker import Handlers, JobContext
from worker.worker import Worker, WorkerConfig

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
HANDLERS = Path(__file__).resolve().with_name("process_handlers.py")

KILL_ITERATIONS = int(os.environ.get("JOBTRAIL_WORKER_KILL_ITERATIONS", "50"))
KILL_SEED = int(os.environ.get("JOBTRAIL_WORKER_KILL_SEED", str(time.time_ns() % (1 << 31))))


# -- worker processes --------------------------------------------------------------------


@dataclass
class Proc:
    """One `jobtrail worker` process and the file its stdout and stderr go to."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def caught_signals(self) -> set[int]:
        """The signals the process has handlers for (the SigCgt mask in /proc/PID/status)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        (mask,) = [int(line.split()[1], 16) for line in status.splitlines() if "SigCgt:" in line]
        return {n for n in range(1, 65) if mask & (1 << (n - 1))}

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def wait_handles_sigterm(self, within: float = 30.0) -> None:
        """Until the process catches SIGTERM: its worker loop runs (Linux: /proc SigCgt)."""
        deadline = time.monotonic() + within
        while True:
            assert self.popen.poll() is None, f"worker {self.pid} died:\n{self.tail()}"
            if signal.SIGTERM in self.caught_signals():
                return
            assert time.monotonic() < deadline, f"worker {self.pid} not up:\n{self.tail()}"
            await anyio.sleep(0.01)

    async def exit_status(self, within: float) -> int:
        """Wait for the process to end (polling; fails after `within` s)."""
        deadline = time.monotonic() + within
        while (code := self.popen.poll()) is None:
            assert time.monotonic() < deadline, f"worker {self.pid} still running:\n{self.tail()}"
            await anyio.sleep(0.02)
        return code


class Workers:
    """Starts worker processes on `data`; `close` SIGKILLs and reaps every one still running."""

    def __init__(
        self,
        tmp: Path,
        data: Path,
        *,
        lease_seconds: float,
        retry_base_delay: float,
    ) -> None:
        self.data = data
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.loaded_file = tmp / "loaded"
        self.procs: list[Proc] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
        env.update(
            PYTHONPATH=str(REPO),
            JOBTRAIL_LEASE_SECONDS=str(lease_seconds),
            JOBTRAIL_RETRY_BASE_DELAY=str(retry_base_delay),
            JOBTRAIL_TEST_LOADED=str(self.loaded_file),
        )
        self.env = env

    def start(self, concurrency: int = 4, *extra: str) -> Proc:
        log = self.logs / f"worker-{len(self.procs)}.log"
        command = [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--data",
            str(self.data),
            "--concurrency",
            str(concurrency),
            "--handlers",
            str(HANDLERS),
            *extra,
        ]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    def loaded(self) -> set[int]:
        """Pids of the workers that have opened the store and loaded their handlers."""
        try:
            text = self.loaded_file.read_text()
        except FileNotFoundError:
            return set()
        return {int(line) for line in text.split()}

    async def wait_loaded(self, procs: Sequence[Proc], count: int, within: float = 30.0) -> None:
        """Until at least `count` of `procs` have loaded (fails after `within` s)."""
        deadline = time.monotonic() + within
        while sum(p.pid in self.loaded() for p in procs) < count:
            dead = [p for p in procs if p.popen.poll() is not None and p.pid not in self.loaded()]
            assert not dead, f"a worker died starting up:\n{dead[0].tail()}"
            assert time.monotonic() < deadline, f"workers not up in {within} s"
            await anyio.sleep(0.01)

    def troubles(self) -> list[str]:
        """Log lines of every worker so far that show a traceback or an error."""
        return [
            f"worker {p.pid}: {line}"
            for p in self.procs
            for line in p.tail(1 << 30).splitlines()
            if "Traceback" in line or " ERROR " in line
        ]

    def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
        for p in self.procs:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process ends
                pass


@contextmanager
def workers(tmp: Path, data: Path, **config: float) -> Iterator[Workers]:
    pool = Workers(tmp, data, **config)
    try:
        yield pool
    finally:
        pool.close()


def pid_of(worker_id: str) -> int:
    """The pid in a worker id `host:pid:random`."""
    return int(worker_id.rsplit(":", 2)[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus counters (samples without labels), by name."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("jobtrail_") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def verify_cli(data: Path) -> None:
    """`jobtrail verify --data DATA` exits 0 and reports no error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "verify", "--data", str(data), "--json"],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert not errors, f"verify: {errors[:10]}\n{done.stderr}"
    assert done.returncode == 0, f"verify exit {done.returncode}: {report}"


# -- jobs and their histories ------------------------------------------------------------


def requested(job_type: str, params: dict[str, Any], max_retries: int = 3) -> JobRequested:
    return JobRequested(
        job_type=job_type,
        site_id="site1",
        user_id="user1",
        params=params,
        max_retries=max_retries,
    )


async def submit(
    store: EventStore, job_type: str, params: dict[str, Any], max_retries: int = 3
) -> str:
    job_id = new_event_id()
    await store.append(
        streams.job(job_id), [new(requested(job_type, params, max_retries))], NO_STREAM
    )
    return job_id


class Feed:
    """Every job's view, folded from the global feed as far as it has been read."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.table = JobTable()
        self.position = 0

    async def catch_up(self) -> None:
        while page := await self.store.read_all(self.position + 1, 5000):
            for recorded in page:
                self.table.apply(recorded)
            self.position = page[-1].position

    def view(self, job_id: str) -> JobView | None:
        return self.table.get(job_id)

    async def wait_final(
        self, job_ids: Sequence[str], within: float, explain: Callable[[], str] = str
    ) -> None:
        deadline = time.monotonic() + within
        while True:
            await self.catch_up()
            views = [self.view(j) for j in job_ids]
            open_ = [v for v in views if v is None or not v.is_final]
            if not open_:
                return
            if time.monotonic() > deadline:
                shown = Counter(v.status if v else "missing" for v in open_)
                raise AssertionError(
                    f"{len(open_)} of {len(job_ids)} jobs not final after {within} s: "
                    f"{dict(shown)} {explain()}"
                )
            await anyio.sleep(0.1)


def read_runs(path: Path) -> dict[str, list[tuple[int, int]]]:
    """The handler runs `process_handlers` recorded: (pid, attempt) by job id."""
    runs: dict[str, list[tuple[int, int]]] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        pid, job_id, attempt = line.split()
        runs.setdefault(job_id, []).append((int(pid), int(attempt)))
    return runs


def history_problems(events: Sequence[RecordedEvent]) -> list[str]:
    """What breaks the rules of a job's history (API.md section 3); empty when it is sound.

    Versions dense from 1; `requested` first; claims numbered 1..n within a round; every
    attempt ended once (`completed`, `failed` or `cancelled`) before the next claim; a
    `failed` that will retry followed at once by `retried`; lease renewals and progress
    only from the attempt that holds the job; exactly one final event, and nothing after it.
    """
    problems: list[str] = []
    versions = [e.version for e in events]
    if versions != list(range(1, len(events) + 1)):
        problems.append(f"versions not dense: {versions}")
    if not events or not isinstance(events[0].event, JobRequested):
        return [*problems, "the history does not begin with `requested`"]
    attempt = 0  # the latest claim of the round
    running = False
    final: RecordedEvent | None = None
    for i, recorded in enumerate(events[1:], start=1):
        event = recorded.event
        where = f"v{recorded.version} {event_type(event)}"
        if final is not None:
            problems.append(f"{where} after the final event v{final.version}")
            continue
        match event:
            case JobStarted():
                if running:
                    problems.append(f"{where}: claimed while attempt {attempt} is open")
                if event.attempt != attempt + 1:
                    problems.append(f"{where}: claim {event.attempt}, expected {attempt + 1}")
                attempt, running = event.attempt, True
            case JobLeaseRenewed():
                if not running or event.attempt != attempt:
                    problems.append(f"{where}: renews attempt {event.attempt}, not the open one")
            case JobProgressed():
                if not running:
                    problems.append(f"{where}: progress while no attempt is open")
            case JobCompleted() | JobCancelled():
                running, final = False, recorded
            case JobFailed():
                if not running or event.attempt != attempt:
                    problems.append(f"{where}: ends attempt {event.attempt}, open: {attempt}")
                running = False
                if not event.will_retry:
                    final = recorded
                elif i + 1 >= len(events) or not isinstance(events[i + 1].event, JobRetried):
                    problems.append(f"{where}: will_retry without `retried` right after it")
            case JobRetried(manual=True):
                attempt = 0  # a new round (these tests retry nothing by hand)
            case JobRetried():
                previous = events[i - 1].event
                if not (isinstance(previous, JobFailed) and previous.will_retry):
                    problems.append(f"{where}: not right after a failed attempt")
            case _:
                problems.append(f"{where}: unexpected")
    if final is None:
        problems.append("no final event")
    return problems


def types_of(events: Sequence[RecordedEvent]) -> list[str]:
    return [event_type(e.event) for e in events]


# -- 1. SIGKILL at random instants --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_workers_sigkilled_at_random_instants_lose_no_job_and_run_none_twice(
    tmp_path: Path,
) -> None:
    """Workers die by SIGKILL while jobs are created and run; a clean worker then finishes.

    Every job ends completed, once; a killed attempt ends `failed` WorkerLost + `retried`
    (the lease ran out and another worker took it over); no handler ran twice for one claim.
    """
    rng = random.Random(KILL_SEED)
    seed = f"(JOBTRAIL_WORKER_KILL_SEED={KILL_SEED})"
    print(f"kill loop: {KILL_ITERATIONS} iterations, seed {KILL_SEED}")
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    job_ids: list[str] = []
    killed: dict[int, datetime] = {}  # pid: when it was SIGKILLed
    clean_pid = 0
    t0 = time.monotonic()
    async with open_file_store(data, watch=False) as store:

        async def create(count: int) -> None:
            for _ in range(count):
                params = {"runs": str(runs), "n": len(job_ids)}
                job_ids.append(await submit(store, "work", params, max_retries=10))
                await anyio.sleep(rng.uniform(0.0, 0.012))

        with workers(tmp_path, data, lease_seconds=1.0, retry_base_delay=0.05) as pool:
            alive = [pool.start(rng.choice([2, 4])) for _ in range(2)]
            await pool.wait_loaded(alive, 2)
            for i in range(KILL_ITERATIONS):
                born = [pool.start(rng.choice([2, 4])) for _ in range(rng.choice([1, 2]))]
                older = alive  # this iteration's newborns are still starting up
                victims_wanted = max(1, len(older) + len(born) - 2)
                await pool.wait_loaded(older, min(victims_wanted, len(older)))
                ready = [p for p in older if p.pid in pool.loaded()]
                ran_pids = {pid for r in read_runs(runs).values() for pid, _ in r}
                busy = [p for p in ready if p.pid in ran_pids]  # likelier to die mid-attempt
                idle = [p for p in ready if p.pid not in ran_pids]
                victims = rng.sample(busy, min(victims_wanted, len(busy)))
                victims += rng.sample(idle, min(victims_wanted - len(victims), len(idle)))
                async with anyio.create_task_group() as tg:
                    tg.start_soon(create, rng.randint(10, 20))
                    began = time.monotonic()
                    for delay in sorted(rng.uniform(0.0, 0.3) for _ in victims):
                        await anyio.sleep(max(0.0, began + delay - time.monotonic()))
                        victim = victims.pop()
                        victim.signal(signal.SIGKILL)
                        killed[victim.pid] = datetime.now(UTC)
                        assert await victim.exit_status(10) == -signal.SIGKILL
                alive = [p for p in alive if p.pid not in killed] + born
                crashed = [p for p in alive if p.popen.poll() is not None]
                assert not crashed, f"iteration {i} {seed}: a worker died:\n{crashed[0].tail()}"
            loop_seconds = time.monotonic() - t0
            for p in alive:  # the survivors die too: their claims must be taken over
                p.signal(signal.SIGKILL)
                killed[p.pid] = datetime.now(UTC)
                await p.exit_status(10)
            clean = pool.start(4)
            clean_pid = clean.pid
            await clean.wait_handles_sigterm()
            await Feed(store).wait_final(job_ids, 60, lambda: f"{seed}\n{clean.tail()}")
            clean.signal(signal.SIGTERM)
            assert await clean.exit_status(15) == 0, clean.tail()
            troubles = pool.troubles()
        total_seconds = time.monotonic() - t0

        histories = {j: await store.read_stream(streams.job(j)) for j in job_ids}
        feed = Feed(store)
        await feed.catch_up()
        assert len(feed.table) == len(job_ids), f"jobs in the store that no one created {seed}"

    assert not troubles, "\n".join(troubles[:20])
    handler_runs = read_runs(runs)
    lost_attempts = lost_alive = 0
    died_mid_attempt: set[int] = set()
    for job_id, events in histories.items():
        where = f"job {job_id} {seed}: {types_of(events)}"
        problems = history_problems(events)
        assert not problems, f"{problems} in {where}"
        view = feed.view(job_id)
        assert view is not None and view.status == "completed", where
        assert types_of(events).count("completed") == 1, where
        starts = [e.event for e in events if isinstance(e.event, JobStarted)]
        fails = [e.event for e in events if isinstance(e.event, JobFailed)]
        assert {f.error_code for f in fails} <= {"WorkerLost"}, where
        # a claim by a killed worker ended with the result it appended before dying, or
        # was taken over; a claim by the clean worker (never killed) completed
        claimers = {s.attempt: pid_of(s.worker_id) for s in starts}
        assert set(claimers.values()) <= {*killed, clean_pid}, where
        for e in events:
            if isinstance(e.event, JobFailed):
                # taken over: the claimer was dead, or alive but late renewing its lease
                lost_attempts += 1
                died = killed.get(claimers[e.event.attempt])
                lost_alive += died is None or e.recorded_at < died
                died_mid_attempt.add(claimers[e.event.attempt])
        # the handler ran at most once per claim, only for claims, and the result
        # recorded is that of one of its runs
        ran = handler_runs.get(job_id, [])
        assert len(ran) == len(set(ran)), f"a claim ran its handler twice: {ran} in {where}"
        assert all(claimers.get(attempt) == pid for pid, attempt in ran), f"{ran} in {where}"
        assert (view.result["pid"], view.result["attempt"]) in ran, where
        assert view.result["attempt"] == starts[-1].attempt, where

    verify_cli(data)
    assert lost_attempts > 0, f"no kill ever landed mid-attempt {seed}"
    handler_run_count = sum(map(len, handler_runs.values()))
    print(
        f"{len(job_ids)} jobs, {len(killed)} workers killed ({len(died_mid_attempt)} of them "
        f"mid-attempt), {lost_attempts} attempts taken over (WorkerLost; {lost_alive} of them "
        f"from a live worker late renewing its lease), {handler_run_count} handler runs; "
        f"loop {loop_seconds:.1f} s, total {total_seconds:.1f} s"
    )


# -- 2. racing workers ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
async def test_racing_worker_processes_run_each_job_once(tmp_path: Path, processes: int) -> None:
    """1,000 jobs, several workers racing to claim them: each job claimed and completed once."""
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    count = 1000
    async with open_file_store(data, watch=False) as store:
        job_ids = [new_event_id() for _ in range(count)]
        for start in range(0, count, 100):
            await store.append_many(
                [
                    AppendTo(
                        streams.job(j), [new(requested("noop", {"runs": str(runs)}))], NO_STREAM
                    )
                    for j in job_ids[start : start + 100]
                ]
            )
        with workers(tmp_path, data, lease_seconds=600.0, retry_base_delay=0.05) as pool:
            ports = [free_port() for _ in range(processes)]
            procs = [pool.start(4, "--metrics-port", str(port)) for port in ports]
            t0 = time.monotonic()
            await Feed(store).wait_final(job_ids, 120)
            seconds = time.monotonic() - t0
            metrics = [scrape(port) for port in ports]
            for p in procs:
                p.signal(signal.SIGTERM)
            for p in procs:
                assert await p.exit_status(15) == 0, p.tail()
            troubles = pool.troubles()
        assert not troubles, "\n".join(troubles[:20])
        histories = {j: await store.read_stream(streams.job(j)) for j in job_ids}

    pids = {p.pid for p in procs}
    handler_runs = read_runs(runs)
    by_pid: Counter[int] = Counter()
    for job_id, events in histories.items():
        where = f"job {job_id}: {types_of(events)}"
        assert types_of(events) == ["requested", "started", "completed"], where
        started, completed = events[1].event, events[2].event
        assert isinstance(started, JobStarted) and isinstance(completed, JobCompleted)
        assert started.attempt == 1 and pid_of(started.worker_id) in pids, where
        assert completed.result == {"pid": pid_of(started.worker_id), "attempt": 1}, where
        assert handler_runs.get(job_id) == [(pid_of(started.worker_id), 1)], where
        by_pid[pid_of(started.worker_id)] += 1
    claimed = sum(m["jobtrail_worker_attempts_started_total"] for m in metrics)
    conflicts = sum(m["jobtrail_worker_claims_lost_total"] for m in metrics)
    assert claimed == count
    assert sum(m["jobtrail_worker_takeovers_total"] for m in metrics) == 0
    assert sum(m["jobtrail_worker_attempts_fenced_total"] for m in metrics) == 0
    verify_cli(data)
    print(
        f"{processes} workers: {count} jobs in {seconds:.1f} s, "
        f"claims per worker {sorted(by_pid.values())}, {conflicts:.0f} claim conflicts lost"
    )


# -- 3. a stopped worker wakes up after a takeover ----------------------------------------


@pytest.mark.slow
async def test_a_worker_stopped_past_its_lease_records_nothing_after_the_takeover(
    tmp_path: Path,
) -> None:
    """SIGSTOP a worker mid-job past its lease: another takes over and completes the job.

    After SIGCONT the first worker's late result is dropped (its appends are fenced), and
    the first worker carries on healthy: it runs a new job and stops cleanly on SIGTERM.
    """
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    async with open_file_store(data, watch=False) as store:
        with workers(tmp_path, data, lease_seconds=1.0, retry_base_delay=0.05) as pool:
            port = free_port()
            first = pool.start(1, "--metrics-port", str(port))
            await pool.wait_loaded([first], 1)
            job_id = await submit(store, "slow", {"runs": str(runs), "seconds": 2.5})
            deadline = time.monotonic() + 15
            while job_id not in read_runs(runs):  # its handler runs
                assert time.monotonic() < deadline, f"never ran:\n{first.tail()}"
                await anyio.sleep(0.002)
            first.signal(signal.SIGSTOP)  # within ms of its claim: no append in flight
            view = await load_job(store, job_id)
            assert view is not None and view.status == "running"
            assert view.worker_id is not None and pid_of(view.worker_id) == first.pid
            second = pool.start(1)
            deadline = time.monotonic() + 20
            while (view := await load_job(store, job_id)) is None or not view.is_final:
                assert time.monotonic() < deadline, f"not taken over:\n{second.tail()}"
                await anyio.sleep(0.02)
            taken_over = await store.read_stream(streams.job(job_id))

            first.signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            fenced = "jobtrail_worker_attempts_fenced_total"
            while scrape(port)[fenced] < 1:  # it noticed the takeover and dropped its result
                assert first.popen.poll() is None, f"the first worker died:\n{first.tail()}"
                assert time.monotonic() < deadline, f"never noticed:\n{first.tail()}"
                await anyio.sleep(0.02)
            await anyio.sleep(0.5)  # room for a late append, if any were to slip through
            history = await store.read_stream(streams.job(job_id))
            assert history == taken_over, "something landed after the takeover's result"
            assert first.popen.poll() is None, first.tail()

            # the first worker is healthy: with the second one gone, it runs a new job
            second.signal(signal.SIGTERM)
            assert await second.exit_status(15) == 0, second.tail()
            after = await submit(store, "work", {"runs": str(runs)})
            deadline = time.monotonic() + 15
            while (done := await load_job(store, after)) is None or not done.is_final:
                assert time.monotonic() < deadline, f"the first worker is stuck:\n{first.tail()}"
                await anyio.sleep(0.02)
            assert done.status == "completed" and done.result["pid"] == first.pid, first.tail()
            first.signal(signal.SIGTERM)
            assert await first.exit_status(15) == 0, first.tail()
            troubles = pool.troubles()
            history = await store.read_stream(streams.job(job_id))

    assert not troubles, "\n".join(troubles[:20])
    assert view.status == "completed"
    assert view.result == {"pid": second.pid, "attempt": 2}
    problems = history_problems(history)
    assert not problems, problems
    kinds = [t for t in types_of(history) if t != "lease_renewed"]
    assert kinds == ["requested", "started", "failed", "retried", "started", "completed"]
    starts = [e.event for e in history if isinstance(e.event, JobStarted)]
    assert [(s.attempt, pid_of(s.worker_id)) for s in starts] == [(1, first.pid), (2, second.pid)]
    (lost,) = [e for e in history if isinstance(e.event, JobFailed)]
    assert isinstance(lost.event, JobFailed)
    assert lost.event.error_code == "WorkerLost" and lost.event.will_retry
    # nothing of the first worker's attempt after the takeover: no renewal, no result
    for e in history[lost.version :]:
        assert not (isinstance(e.event, JobLeaseRenewed) and e.event.attempt == 1), e
    # both ran the handler; only the second one's result is recorded
    assert read_runs(runs)[job_id] == [(first.pid, 1), (second.pid, 2)]
    verify_cli(data)


# -- 4. SIGTERM hands running jobs back ---------------------------------------------------


@pytest.mark.slow
async def test_a_worker_stopped_with_sigterm_hands_its_jobs_back_and_exits_0(
    tmp_path: Path,
) -> None:
    """SIGTERM while handlers run: exit 0, each job `failed` WorkerLost + `retried` due at
    once (not after the 60 s lease), and another worker then completes every one of them."""
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    async with open_file_store(data, watch=False) as store:
        with workers(tmp_path, data, lease_seconds=60.0, retry_base_delay=0.05) as pool:
            first = pool.start(4)
            await first.wait_handles_sigterm()
            params = {"runs": str(runs), "seconds": 30, "then": 0}
            job_ids = [await submit(store, "slow", params) for _ in range(3)]
            feed = Feed(store)
            deadline = time.monotonic() + 15
            while True:
                await feed.catch_up()
                if all((v := feed.view(j)) is not None and v.status == "running" for j in job_ids):
                    break
                assert time.monotonic() < deadline, f"not all claimed:\n{first.tail()}"
                await anyio.sleep(0.01)
            stopped_at = time.monotonic()
            first.signal(signal.SIGTERM)
            assert await first.exit_status(15) == 0, first.tail()
            stop_seconds = time.monotonic() - stopped_at
            handed_back = {j: await store.read_stream(streams.job(j)) for j in job_ids}

            second = pool.start(4)  # attempt 2 runs at once (`then`: 0 s)
            await feed.wait_final(job_ids, 30, second.tail)
            second.signal(signal.SIGTERM)
            assert await second.exit_status(15) == 0, second.tail()
            troubles = pool.troubles()
        done = {j: await store.read_stream(streams.job(j)) for j in job_ids}

    assert not troubles, "\n".join(troubles[:20])
    assert stop_seconds < 5, f"SIGTERM took {stop_seconds:.1f} s"
    for j in job_ids:
        events = handed_back[j]
        assert types_of(events) == ["requested", "started", "failed", "retried"], j
        failed, retried = events[2], events[3]
        assert isinstance(failed.event, JobFailed) and isinstance(retried.event, JobRetried)
        assert failed.event.error_code == "WorkerLost" and failed.event.will_retry
        assert (retried.event.next_attempt_at - failed.recorded_at).total_seconds() < 1
        assert not history_problems(done[j]), history_problems(done[j])
        kinds = [t for t in types_of(done[j]) if t != "lease_renewed"]
        assert kinds == ["requested", "started", "failed", "retried", "started", "completed"]


# -- found while writing these tests: deterministic in-process reproductions --------------
#
# The kill loop above met the first one about once in four runs (a `lease_renewed` after
# `completed`); it tolerates and counts it, this test pins it down. The other two leave a
# job that no running worker touches again (only a restarted worker, which rebuilds its
# queue from the feed, picks it up). With real processes the third shows when a cancel
# request lands within the feed's lag (~5-20 ms) before a dead worker's lease runs out;
# these in-process versions hit each window every time.

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class InjectingStore(MemoryStore):
    """A memory store that calls `before(batch)` once, on the first append `when` matches."""

    def __init__(self) -> None:
        super().__init__()
        self.when: Callable[[Sequence[AppendTo]], bool] = lambda batch: False
        self.before: Callable[[Sequence[AppendTo]], Awaitable[None]] | None = None

    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        before = self.before
        if before is not None and self.when(batch):
            self.before = None
            await before(batch)
        return await super().append_many(batch)


def holds(kind: type[Event]) -> Callable[[Sequence[AppendTo]], bool]:
    return lambda batch: any(isinstance(e.event, kind) for a in batch for e in a.events)


def echo_worker(store: EventStore, clock: Callable[[], datetime]) -> Worker:
    handlers = Handlers()

    @handlers.job("echo")
    async def echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return params

    config = WorkerConfig(concurrency=1, lease_seconds=1.0, retry_base_delay=0.05)
    return Worker(store, handlers, clock, config, rng=random.Random(7))


async def test_no_lease_renewal_lands_after_the_attempts_final_event() -> None:
    store = InjectingStore()

    async def slow_fsync(batch: Sequence[AppendTo]) -> None:
        await anyio.sleep(0.9)  # more than a third of the 1 s lease: a renewal falls due

    store.when, store.before = holds(JobCompleted), slow_fsync
    job_id = await submit(store, "echo", {"n": 1})
    worker = echo_worker(store, lambda: datetime.now(UTC))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        deadline = time.monotonic() + 10
        while (view := await load_job(store, job_id)) is None or not view.is_final:
            assert time.monotonic() < deadline, view
            await anyio.sleep(0.01)
        await anyio.sleep(0.6)  # two more housekeeping rounds
        tg.cancel_scope.cancel()
    history = types_of(await store.read_stream(streams.job(job_id)))
    assert history == ["requested", "started", "completed"], history


async def test_a_claim_the_store_refused_is_claimed_again_later() -> None:
    store = InjectingStore()

    async def refuse(batch: Sequence[AppendTo]) -> None:
        raise StorageError("no space left on device (injected, once)")

    store.when, store.before = holds(JobStarted), refuse
    job_id = await submit(store, "echo", {"n": 1})
    now = T0
    worker = echo_worker(store, lambda: now)
    await worker.run_once(now)  # the claim fails; nothing was appended
    for _ in range(3):
        now += timedelta(seconds=60)
        await worker.run_once(now)
    view = await load_job(store, job_id)
    assert view is not None and view.status == "completed", view


async def test_a_takeover_that_lost_to_a_cancel_request_is_tried_again() -> None:
    store = InjectingStore()
    job_id = await submit(store, "echo", {"n": 1})
    stream = streams.job(job_id)
    dead = JobStarted(attempt=1, worker_id="gone:1:dead", lease_expires_at=T0)
    await store.append(stream, [new(dead)], 1)

    async def user_cancels(batch: Sequence[AppendTo]) -> None:
        await store.append(stream, [new(JobCancelRequested(by="user1"))], 2)

    store.when, store.before = holds(JobFailed), user_cancels
    now = T0 + timedelta(seconds=1)
    worker = echo_worker(store, lambda: now)
    await worker.run_once(now)  # takes over at version 2; the cancel request made it 3
    for _ in range(3):
        now += timedelta(seconds=60)
        await worker.run_once(now)
    history = types_of(await store.read_stream(stream))
    assert history == ["requested", "started", "cancel_requested", "cancelled"], history
