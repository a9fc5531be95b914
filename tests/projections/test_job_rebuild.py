"""`JobRebuild` (replay's fold on drafts) ends in the state the live `JobTable.apply` reaches.

Histories are drawn from every event a job stream can hold, in any order (legal or not):
retries automatic and manual, cancels, failures, progress out of range, lease renewals of
the current and of an old attempt, events before `requested` and after a final state, a
second `requested`, imported endings of a pending job, events of other types in a job
stream, and pruning tombstones (then the job requested again). The tables must be equal,
in the same order, and dump to the same bytes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import streams
from eventstore.events import (
    AnyEvent,
    JobCancelRequested,
    JobLeaseRenewed,
    JobPruned,
    JobRequested,
    JobStarted,
    LeadSaved,
    QuotaReserved,
)
from eventstore.records import RecordedEvent
from projections.job_rebuild import JobRebuild, _draft
from projections.jobs import JobTable, JobView, apply_job

from .builders import T0, cancelled, completed, failed, job_id, progressed, requested, retried

JOBS = 6


def requests(n: int) -> st.SearchStrategy[JobRequested]:
    return st.builds(
        lambda site, user, kind, retries, params: requested(
            site, user, kind, max_retries=retries, metadata=params
        ),
        st.sampled_from(["site_a", "site_b"]),
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["ai_evaluation", "report"]),
        st.integers(0, 3),
        st.sampled_from([{}, {"lead_id": "lead_1"}, {"n": n, "deep": [1, {"x": None}]}]),
    )


def job_events(n: int) -> st.SearchStrategy[AnyEvent]:
    """Any event of a job's stream, with details drawn."""
    at = st.integers(0, 3600).map(lambda s: T0 + timedelta(seconds=s))
    return st.one_of(
        requests(n),
        st.builds(
            lambda attempt, worker, lease: JobStarted(
                attempt=attempt, worker_id=worker, lease_expires_at=lease
            ),
            st.integers(1, 4),
            st.sampled_from(["", "w1", "w2"]),
            st.one_of(st.none(), at),
        ),
        st.builds(progressed, st.integers(-20, 130), st.sampled_from(["", "reading", "half"])),
        st.builds(completed, st.sampled_from([None, {}, {"score": n}, [1, 2], "text", 3.5])),
        st.builds(
            failed,
            st.integers(1, 4),
            st.booleans(),
            st.sampled_from(["ModelTimeout", "ResourceNotFound"]),
        ),
        st.builds(retried, st.integers(1, 99), st.booleans()),
        st.builds(
            lambda attempt, lease: JobLeaseRenewed(attempt=attempt, lease_expires_at=lease),
            st.integers(0, 4),
            at,
        ),
        st.builds(lambda by: JobCancelRequested(by=by), st.sampled_from(["u1", "admin"])),
        st.builds(cancelled, st.sampled_from(["u1", "admin"])),
        st.just(QuotaReserved(job_id=job_id(n))),  # not a job event, in a job stream
    )


def pruned(n: int, position: int) -> JobPruned:
    return JobPruned(
        job_id=job_id(n),
        site_id="site_a",
        user_id="u1",
        job_type="report",
        status="completed",
        finished_at=T0,
        last_version=9,
        created_position=position,
        lead_id=None,
    )


def likely_next(draw: st.DrawFn, view: JobView | None, n: int) -> AnyEvent:
    """An event that makes the job move on from where it is (as the service appends)."""
    if view is None:
        return draw(requests(n))
    attempt = view.attempt
    lease = T0 + timedelta(seconds=draw(st.integers(0, 99)))
    options: list[AnyEvent]
    match view.status:
        case "pending":
            options = [
                JobStarted(attempt=attempt + 1, worker_id=draw(st.sampled_from(["", "w1"]))),
                retried(draw(st.integers(1, 99))),
                cancelled(),
                completed({"imported": True}),
                failed(attempt, will_retry=draw(st.booleans())),
            ]
        case "running":
            options = [
                progressed(draw(st.integers(-5, 105)), draw(st.sampled_from(["", "half"]))),
                JobLeaseRenewed(attempt=attempt - draw(st.integers(0, 1)), lease_expires_at=lease),
                JobCancelRequested(by=draw(st.sampled_from(["u1", "admin"]))),
                completed({"n": n}),
                failed(attempt, will_retry=draw(st.booleans())),
                cancelled("admin"),
            ]
        case "failed":
            options = [retried(draw(st.integers(1, 99)), manual=True)]
        case _:
            return draw(job_events(n))
    return draw(st.sampled_from(options))


@st.composite
def feeds(draw: st.DrawFn) -> list[RecordedEvent]:
    """A feed of several jobs' streams interleaved, with tombstones and other streams.

    Mostly the events that move a job on (so that histories get far), one in four any
    event of a job stream at all.
    """
    feed: list[RecordedEvent] = []
    versions: dict[str, int] = {}
    views: dict[int, JobView | None] = {}
    for _ in range(draw(st.integers(0, 80))):
        n = draw(st.integers(1, JOBS))
        what = draw(
            st.sampled_from(["next"] * 9 + ["any"] * 3 + ["prune", "prune_in_job", "other"])
        )
        event: AnyEvent
        if what in ("next", "any"):
            stream = streams.job(job_id(n))
            event = likely_next(draw, views.get(n), n) if what == "next" else draw(job_events(n))
        elif what == "prune":
            stream, event = streams.pruned("site_a"), pruned(n, draw(st.integers(1, 90)))
        elif what == "prune_in_job":
            stream, event = streams.job(job_id(n)), pruned(n, 1)
        else:
            stream, event = streams.lead("site_a", "lead_1"), LeadSaved(fields={"n": n})
        versions[stream] = version = versions.get(stream, 0) + 1
        position = len(feed) + 1
        at = T0 + timedelta(seconds=position)
        recorded = RecordedEvent(position, stream, version, f"id-{position}", at, event)
        feed.append(recorded)
        if what == "prune":
            views.pop(n, None)
        elif stream.startswith("job:"):
            views[n] = apply_job(views.get(n), recorded)
    return feed


def live(feed: list[RecordedEvent]) -> JobTable:
    table = JobTable()
    for recorded in feed:
        table.apply(recorded)
    return table


def rebuilt(feed: list[RecordedEvent]) -> JobTable:
    fold, table = JobRebuild(), JobTable()
    for recorded in feed:
        fold.apply(recorded)
    fold.finish(table)
    return table


def same(a: JobTable, b: JobTable) -> None:
    assert a == b
    assert [v.job_id for v in a] == [v.job_id for v in b]  # the live table's order too
    assert a.dump() == b.dump()
    for job in range(1, JOBS + 1):
        assert a.pruned(job_id(job)) == b.pruned(job_id(job))


@settings(max_examples=150, deadline=None)
@given(feed=feeds())
def test_the_rebuild_fold_equals_the_live_fold(feed: list[RecordedEvent]) -> None:
    same(live(feed), rebuilt(feed))


@settings(max_examples=60, deadline=None)
@given(feed=feeds(), data=st.data())
def test_every_prefix_too(feed: list[RecordedEvent], data: st.DataObject) -> None:
    """`replay` stops at a checkpoint's position: any prefix, mid-history for some jobs."""
    cut = data.draw(st.integers(0, len(feed)), label="cut")
    same(live(feed[:cut]), rebuilt(feed[:cut]))


def test_a_typical_history_of_each_ending() -> None:
    """The cases the property test must not miss by chance: each final state, then more."""
    job = streams.job(job_id(1))
    events: list[Any] = [
        requested(),
        JobStarted(attempt=1, worker_id="w1"),
        progressed(30, "reading"),
        failed(1, will_retry=True),
        retried(30),
        JobStarted(attempt=2, worker_id="w2"),
        JobCancelRequested(by="admin"),
        failed(2),
        retried(60, manual=True),  # a new round of a failed job: back to a draft's rules
        JobStarted(attempt=1),
        completed({"ok": True}),
        progressed(50),  # after the end: only version and position move
        cancelled(),
    ]
    feed = [
        RecordedEvent(i, job, i, f"id-{i}", T0 + timedelta(seconds=i), e)
        for i, e in enumerate(events, start=1)
    ]
    for cut in range(len(feed) + 1):
        same(live(feed[:cut]), rebuilt(feed[:cut]))
    view = rebuilt(feed).get(job_id(1))
    assert view is not None and view.status == "completed" and view.version == len(events)


def test_a_draft_holds_every_field_of_a_view() -> None:
    """A field added to `JobView` must be added to `_draft` (a shorter array would default)."""
    recorded = RecordedEvent(1, streams.job(job_id(1)), 1, "id", T0, requested())
    draft = _draft(requested(), recorded, job_id(1))
    assert len(draft) == len(JobView.__struct_fields__)
