"""The job projection of 100,000 evaluation jobs fits in 300 MB, live and loaded back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Folds 100,000 evaluation jobs into the job table and listings, each job's events built
# afresh (distinct strings and dicts, as a decoding store gives), saves them as the runner
# does, drops them and loads them back; prints the peak RSS in MiB: VmHWM, this process's
# own. Not `ru_maxrss`: Linux carries into it the memory of the process that spawned this
# one (the whole pytest process, by the end of the suite more than 300 MiB).
SCRIPT = """
import gc, sys, uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from eventstore.events import JobCompleted, JobProgressed, JobRequested, JobStarted
from eventstore.records import RecordedEvent
from projections import JobListings, JobTable, read_checkpoint, write_checkpoint

t0 = datetime(2026, 11, 22, tzinfo=UTC)
jobs = JobTable()
listings = JobListings(jobs)
position = 0
for i in range(100_000):
    stream = f"job:{uuid.UUID(int=i + 1)}"
    events = [
        JobRequested(
            job_type="ai_evaluation", site_id=f"site_{i % 50}", user_id=f"user_{i % 500}",
            params={"lead_id": f"lead_{i}", "force_refresh": False},
            metadata={"lead_id": f"lead_{i}"},
        ),
        JobStarted(attempt=1, worker_id=f"worker-{i % 4}", lease_expires_at=t0),
        JobProgressed(progress=45, message="Analyzing documents with AI..."),
        JobCompleted(result={
            "id": f"eval_{i}", "score": i % 101, "label": "A", "recommendation": "approve",
            "summary": f"Strong candidate {i} with verified income and stable employment.",
            "risk_flags": ["employment_duration_short"], "fraud_signals": [],
            "evaluated_at": "2026-11-22T10:00:12Z", "model_version": "jobtrail-rules-1",
        }),
    ]
    for version, event in enumerate(events, 1):
        position += 1
        recorded = RecordedEvent(
            position, stream, version, f"e{position}", t0 + timedelta(seconds=position), event
        )
        jobs.apply(recorded)
        listings.apply(recorded)
path = Path(sys.argv[1])
write_checkpoint(path, position, "e", {"jobs": jobs.dump(), "listings": listings.dump()})
first = listings.page("site_7", limit=3)
del jobs, listings, recorded, events
gc.collect()
header, states = read_checkpoint(path)
jobs = JobTable()
jobs.load(states.pop("jobs"))
listings = JobListings(jobs)
listings.load(states.pop("listings"))
assert len(jobs) == 100_000 and listings.page("site_7", limit=3) == first
status = Path("/proc/self/status").read_text().splitlines()
print(int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) // 1024)
"""


def test_100k_jobs_stay_under_300_mb(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.strip())
    assert peak_mib < 300, f"peak RSS {peak_mib} MiB"
