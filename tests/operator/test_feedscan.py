"""`feedscan.folder` skips the events a projection declares it does not fold, and nothing else."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from eventstore import ANY, streams
from eventstore.events import (
    EvaluationQueued,
    JobCompleted,
    JobProgressed,
    JobRequested,
    JobStarted,
    LeadEvaluated,
    LeadSaved,
    QuotaReserved,
    QuotaSet,
)
from eventstore.filelog import FileLog
from eventstore.records import AppendTo, new, uuid7
from projections.model import ReadModel
from service.operator.feedscan import folder, open_feed, scan_feed

LEASE = datetime(2026, 11, 22, 10, 0, 5, 123456, tzinfo=UTC)


def fill_mixed(data: Path, jobs: int) -> None:
    """Generic and evaluation jobs, a lead per evaluation, usage and a site setting."""
    log = FileLog(data)
    try:
        log.append_many(
            [
                AppendTo(
                    streams.site("s1"),
                    [new(QuotaSet(limit=99, tier="pro", from_month="2026-11"))],
                    0,
                )
            ]
        )
        for n in range(jobs):
            job_id = str(uuid7())
            job = streams.job(job_id)
            lead = streams.lead("s1", f"lead_{n}")
            evaluation = n % 3 == 0
            kind = "ai_evaluation" if evaluation else "noop"
            requested = JobRequested(
                job_type=kind, site_id="s1", user_id=f"u{n % 4}", metadata={"lead_id": f"lead_{n}"}
            )
            first = [AppendTo(job, [new(requested)], 0)]
            if evaluation:
                log.append_many([AppendTo(lead, [new(LeadSaved(fields={"n": n}))], ANY)])
                first += [
                    AppendTo(
                        streams.usage("s1", "2026-11"), [new(QuotaReserved(job_id=job_id))], ANY
                    ),
                    AppendTo(lead, [new(EvaluationQueued(job_id=job_id))], ANY),
                ]
            log.append_many(first)
            log.append_many(
                [AppendTo(job, [new(JobStarted(attempt=1, lease_expires_at=LEASE))], 1)]
            )
            log.append_many([AppendTo(job, [new(JobProgressed(progress=50, message="half"))], 2)])
            done = [AppendTo(job, [new(JobCompleted(result={"n": n}))], 3)]
            if evaluation:
                lead_evaluated = LeadEvaluated(
                    job_id=job_id, evaluation_id=f"e{n}", score=n, label="D"
                )
                done.append(AppendTo(lead, [new(lead_evaluated)], ANY))
            log.append_many(done)
    finally:
        log.close()


def test_the_dispatching_fold_equals_applying_every_event_to_every_projection(
    tmp_path: Path,
) -> None:
    fill_mixed(tmp_path, 30)
    dispatched, plain = ReadModel(), ReadModel()
    with closing(open_feed(tmp_path)) as log:
        scan = scan_feed(log, folder(dispatched.projections))
        for page in log.iter_all(1):
            for recorded in page:
                for p in plain.projections:
                    p.apply(recorded)
    assert scan.damage is None and scan.events > 150
    assert len(plain.jobs) == 30 and len(plain.leads) == 10
    assert plain.usage.usage("s1", "2026-11").used == 10
    assert dispatched == plain
    for p in plain.projections:  # the states, not only `==`
        assert next(q for q in dispatched.projections if q.name == p.name).dump() == p.dump()
