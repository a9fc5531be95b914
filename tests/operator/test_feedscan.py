"""`feedscan.folder` skips the events a projection declares it does not fold, and nothing else;
a batched `scan_feed` hands on the same events; listings packed for a partner load the same."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from service.operator.feedscan import Scan, folder, open_feed, scan_feed

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


def _pages(log: FileLog, batch: int, **until: Any) -> tuple[list[list[int]], Scan]:
    pages: list[list[int]] = []
    scan = scan_feed(
        log, lambda page: pages.append([e.position for e in page]), batch=batch, **until
    )
    return pages, scan


def test_a_batched_scan_hands_on_the_same_events_and_stops_at_the_same_place(
    tmp_path: Path,
) -> None:
    fill_mixed(tmp_path, 12)
    with closing(open_feed(tmp_path)) as log:
        every, whole = _pages(log, 1)
        head = whole.position
        times = [e.recorded_at for page in log.iter_all(1) for e in page]
        for until in ({}, {"until": 1}, {"until": head // 2}, {"until": head - 1}):
            one, scan_one = _pages(log, 1, **until)
            for batch in (2, 7, 1000):
                pages, scan = _pages(log, batch, **until)
                assert sum(pages, []) == sum(one, [])
                assert scan == scan_one
                assert all(len(page) > 0 for page in pages)
        at = {"until_time": times[len(times) // 3]}
        assert _pages(log, 5, **at)[1] == _pages(log, 1, **at)[1]
    assert len(every) > 40 and whole.damage is None


def test_a_batched_scan_hands_on_what_it_read_before_damage(tmp_path: Path) -> None:
    fill_mixed(tmp_path, 12)
    feed = tmp_path / "feed" / "feed.log"
    with feed.open("r+b") as f:  # one bit flipped in the middle of the feed
        f.seek(feed.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x10]))
    with closing(open_feed(tmp_path)) as log:
        one, scan_one = _pages(log, 1)
        many, scan = _pages(log, 1000)
    assert scan_one.damage is not None and scan == scan_one
    assert sum(many, []) == sum(one, []) and scan.events == len(sum(one, [])) > 0


def test_listings_packed_for_another_process_load_as_the_same_state(tmp_path: Path) -> None:
    fill_mixed(tmp_path, 30)
    model, other = ReadModel(), ReadModel()
    with closing(open_feed(tmp_path)) as log:
        scan_feed(log, folder(model.projections))
        scan_feed(log, folder([other.jobs]))
    other.listings.unpack(model.listings.pack())
    assert other.listings == model.listings and other.jobs == model.jobs
    assert other.listings.dump() == model.listings.dump()
    page = other.listings.page("s1", limit=5)
    assert [v.job_id for v in page.jobs] == [
        v.job_id for v in model.listings.page("s1", limit=5).jobs
    ]
    assert all(v is other.jobs.get(v.job_id) for v in page.jobs)
