"""What the tools benchmark runs: a store of a realistic mix of histories, and the bare loops.

The store is built through the public `FileLog.commit` (one group commit per chunk of
jobs), so it keeps the layout the store itself chooses. Most jobs are generic ones
(requested, started, progressed twice, completed; a tenth fail once and are retried);
a fifth are lead evaluations, appended the way the service and the worker append them:
the lead saved, then `requested` + `quota_reserved` + `evaluation_queued` in one record,
started, progressed, and `completed` + `lead_evaluated` in one record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from eventstore import ANY, streams
from eventstore.events import (
    EvaluationQueued,
    Event,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRequested,
    JobRetried,
    JobStarted,
    LeadEvaluated,
    LeadSaved,
    QuotaReserved,
    QuotaSet,
)
from eventstore.filelog import FileLog, Request
from eventstore.records import AppendTo, new, uuid7

SITES: Final = 20
MONTH: Final = "2026-11"
EVALUATION_EVERY: Final = 5  # every fifth job evaluates a lead
RETRIED_EVERY: Final = 10  # every tenth generic job fails once and is retried
READ_CHUNK: Final = 1 << 20

Append = list[AppendTo]
"""One record: the appends of one request (several streams land together)."""


@dataclass(frozen=True, slots=True)
class Built:
    """What a build wrote."""

    events: int
    records: int
    jobs: int
    leads: int
    seconds: float


def _site(n: int) -> str:
    return f"site-{n % SITES}"


def _generic(n: int, job: str, now: datetime) -> list[Append]:
    lease = now + timedelta(minutes=1)
    history: list[Event] = [
        JobRequested(
            job_type="document_analysis",
            site_id=_site(n),
            user_id=f"user-{n % 500}",
            params={"document_id": f"doc-{n}", "language": "en", "pages": n % 40 + 1},
            metadata={"source": "upload", "batch": f"b-{n // 1000}"},
            priority=n % 3,
        ),
        JobStarted(attempt=1, worker_id=f"worker-{n % 8}", lease_expires_at=lease),
    ]
    if n % RETRIED_EVERY == 1:
        history += [
            JobFailed(
                error_code="ModelTimeout",
                error_message="the model did not answer within 60 s",
                attempt=1,
                will_retry=True,
                retryable=True,
            ),
            JobRetried(next_attempt_at=now + timedelta(seconds=30)),
            JobStarted(attempt=2, worker_id=f"worker-{(n + 1) % 8}", lease_expires_at=lease),
        ]
    history += [
        JobProgressed(progress=30, message="reading pages"),
        JobProgressed(progress=70, message="analysing"),
        JobCompleted(result={"pages": n % 40 + 1, "summary": "a short summary", "ok": True}),
    ]
    return [[AppendTo(job, [new(e)], version)] for version, e in enumerate(history)]


def _evaluation(n: int, job: str, now: datetime) -> list[Append]:
    site, lead_id = _site(n), f"lead_{n}"
    lead = streams.lead(site, lead_id)
    job_id = job[4:]
    fields = {
        "first_name": "Maria",
        "last_name": f"Lopez {n}",
        "email": f"maria{n}@example.com",
        "phone": "+1 555 0100",
        "move_in_date": "2026-12-01",
        "monthly_rent": 1800 + n % 900,
    }
    requested = JobRequested(
        job_type="ai_evaluation",
        site_id=site,
        user_id=f"user-{n % 500}",
        params={"lead_id": lead_id, "force_refresh": False, "model_version": "auto"},
        metadata={"lead_id": lead_id},
    )
    score = n % 101
    label = "A" if score >= 80 else "B" if score >= 65 else "C" if score >= 50 else "D"
    evaluation = {
        "id": f"eval_{job_id}",
        "lead_id": lead_id,
        "score": score,
        "label": label,
        "recommendation": "approve" if label == "A" else "review" if label != "D" else "reject",
        "summary": "Income covers the rent about three times; documents are consistent.",
        "risk_flags": ["short_employment"] if n % 3 else [],
        "fraud_signals": [],
        "evaluated_at": now.isoformat(),
        "model_version": "jobtrail-rules-1",
    }
    lease = now + timedelta(minutes=1)
    return [
        [AppendTo(lead, [new(LeadSaved(fields=fields))], ANY)],
        [
            AppendTo(job, [new(requested)], 0),
            AppendTo(streams.usage(site, MONTH), [new(QuotaReserved(job_id=job_id))], ANY),
            AppendTo(lead, [new(EvaluationQueued(job_id=job_id))], ANY),
        ],
        [AppendTo(job, [new(JobStarted(attempt=1, worker_id="w", lease_expires_at=lease))], 1)],
        [AppendTo(job, [new(JobProgressed(progress=50, message="Evaluating..."))], 2)],
        [
            AppendTo(job, [new(JobCompleted(result=evaluation))], 3),
            AppendTo(
                lead,
                [
                    new(
                        LeadEvaluated(
                            job_id=job_id, evaluation_id=f"eval_{job_id}", score=score, label=label
                        )
                    )
                ],
                ANY,
            ),
        ],
    ]


def history(n: int, now: datetime) -> tuple[list[Append], bool]:
    """Job `n`'s records, and whether it evaluates a lead."""
    job = streams.job(str(uuid7()))
    if n % EVALUATION_EVERY == 0:
        return _evaluation(n, job, now), True
    return _generic(n, job, now), False


def _events(record: Append) -> int:
    return sum(len(a.events) for a in record)


def _chunks(target: int, chunk: int, now: datetime) -> Iterator[tuple[list[Request], int, int]]:
    """Chunks of requests (step-major: concurrent jobs interleave) totalling `target` events.

    The last job is cut short where the total is reached: a job still running.
    """
    left = target
    n = 0
    while left > 0:
        histories: list[list[Append]] = []
        jobs = leads = 0
        while len(histories) < chunk and left > 0:
            records, is_evaluation = history(n, now)
            kept: list[Append] = []
            for record in records:
                if _events(record) > left:
                    break
                kept.append(record)
                left -= _events(record)
            histories.append(kept)  # never empty: every history starts with one event
            jobs += any(a.stream.startswith("job:") for record in kept for a in record)
            leads += is_evaluation
            n += 1
        steps = max(len(h) for h in histories)
        requests = [Request(h[step]) for step in range(steps) for h in histories if step < len(h)]
        yield requests, jobs, leads


def build_store(
    root: Path,
    events: int,
    deadline: float,
    chunk: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> Built:
    """Fill a new data directory with exactly `events` events; raise past `deadline`."""
    started = time.monotonic()
    now = datetime.now(UTC)
    log = FileLog(root)
    written = records = jobs = leads = 0
    try:
        settings = [
            Request([AppendTo(streams.site(_site(s)), [new(_quota())], 0)]) for s in range(SITES)
        ]
        for requests, n_jobs, n_leads in _chunks(events - SITES, chunk, now):
            if time.monotonic() > deadline:
                raise TimeoutError(f"building the store took too long ({written} events)")
            batch = settings + requests
            settings = []
            log.commit(batch)
            for r in batch:
                if r.error is not None:
                    raise r.error
            written += sum(_events(list(r.batch)) for r in batch)
            records += len(batch)
            jobs += n_jobs
            leads += n_leads
            if progress is not None:
                progress(written)
    finally:
        log.close()
    return Built(written, records, jobs, leads, time.monotonic() - started)


def _quota() -> QuotaSet:
    return QuotaSet(limit=1_000_000, tier="enterprise", from_month=MONTH, by="admin")


def data_files(root: Path) -> list[str]:
    """Every regular file of a data directory, in directory order, sorted per directory."""
    out: list[str] = []
    stack = [str(root)]
    while stack:
        entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name, reverse=True)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                out.append(entry.path)
    return out


def bare_read(root: Path) -> tuple[int, float]:
    """Bytes of every file of a data directory read sequentially, and the seconds it took.

    Listing the files counts: a verifier has to find them too.
    """
    buf = bytearray(READ_CHUNK)
    start = time.perf_counter()
    total = 0
    for path in data_files(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            while n := os.readv(fd, [buf]):
                total += n
        finally:
            os.close(fd)
    return total, time.perf_counter() - start
