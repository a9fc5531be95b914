"""Listings: newest first, filters, and cursor paging that visits every job exactly once."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import AnyEvent
from eventstore.records import RecordedEvent
from projections import InvalidCursor, JobListings, ReadModel, decode_cursor, encode_cursor

from .builders import cancelled, completed, failed, history, job_id, job_stream, requested, started

ENDINGS: dict[str, list[AnyEvent]] = {
    "pending": [],
    "running": [started()],
    "completed": [started(), completed()],
    "failed": [started(), failed()],
    "cancelled": [cancelled()],
}

Job = tuple[str, str, str, str]  # site, user, type, status


class Jobs:
    """A read model fed jobs one stream at a time, in feed order."""

    def __init__(self) -> None:
        self.model = ReadModel()
        self.position = 0
        self.versions: dict[str, int] = {}

    def feed(self, stream: str, events: Sequence[AnyEvent]) -> list[RecordedEvent]:
        version = self.versions.get(stream, 0) + 1
        recorded = history(stream, events, first=self.position + 1, version=version)
        self.versions[stream] = version + len(events) - 1
        for r in recorded:
            for p in self.model.projections:
                p.apply(r)
        self.position += len(recorded)
        return recorded

    def add(self, n: int, job: Job) -> None:
        site, user, kind, status = job
        self.feed(job_stream(n), [requested(site, user, kind), *ENDINGS[status]])

    @property
    def listings(self) -> JobListings:
        return self.model.listings


def ids(
    jobs: Jobs,
    site: str,
    *,
    user_id: str | None = None,
    statuses: Collection[str] | None = None,
    job_type: str | None = None,
) -> list[str]:
    page = jobs.listings.page(
        site, user_id=user_id, statuses=statuses, job_type=job_type, limit=500
    )
    assert page.next_cursor is None and page.count == len(page.jobs)
    return [v.job_id for v in page.jobs]


@pytest.fixture
def jobs() -> Jobs:
    jobs = Jobs()
    for n, job in enumerate(
        [
            ("site_a", "u1", "ai_evaluation", "completed"),
            ("site_a", "u2", "report", "pending"),
            ("site_b", "u1", "ai_evaluation", "failed"),
            ("site_a", "u1", "report", "running"),
            ("site_a", "u1", "ai_evaluation", "cancelled"),
            ("site_a", "u2", "ai_evaluation", "failed"),
        ],
        start=1,
    ):
        jobs.add(n, job)
    return jobs


def test_newest_first_per_site_and_per_user(jobs: Jobs) -> None:
    assert ids(jobs, "site_a") == [job_id(n) for n in (6, 5, 4, 2, 1)]
    assert ids(jobs, "site_a", user_id="u1") == [job_id(n) for n in (5, 4, 1)]
    assert ids(jobs, "site_b") == [job_id(3)]
    assert ids(jobs, "site_c") == []


def test_filters_by_status_and_type(jobs: Jobs) -> None:
    assert ids(jobs, "site_a", statuses={"failed"}) == [job_id(6)]
    assert ids(jobs, "site_a", statuses=["pending", "running"]) == [job_id(4), job_id(2)]
    assert ids(jobs, "site_a", statuses="running") == [job_id(4)]
    assert ids(jobs, "site_a", job_type="report") == [job_id(4), job_id(2)]
    assert ids(jobs, "site_a", user_id="u1", job_type="ai_evaluation", statuses={"completed"}) == [
        job_id(1)
    ]
    assert ids(jobs, "site_a", job_type="no_such_type") == []


def test_a_listing_reads_the_current_status(jobs: Jobs) -> None:
    assert ids(jobs, "site_a", statuses={"pending"}) == [job_id(2)]
    jobs.feed(job_stream(2), [started(), completed()])
    assert ids(jobs, "site_a", statuses={"pending"}) == []
    assert ids(jobs, "site_a", statuses={"running"}) == [job_id(4)]


def test_a_second_requested_is_listed_once_and_never_elsewhere() -> None:
    jobs = Jobs()
    jobs.feed(job_stream(1), [requested("site_a"), requested("site_b")])
    assert ids(jobs, "site_a") == [job_id(1)]
    assert ids(jobs, "site_b") == []


def test_pages_continue_after_the_cursor_and_end_with_none(jobs: Jobs) -> None:
    first = jobs.listings.page("site_a", limit=2)
    assert [v.job_id for v in first.jobs] == [job_id(6), job_id(5)]
    assert first.next_cursor is not None
    jobs.add(7, ("site_a", "u1", "report", "pending"))  # newer jobs never shift the pages
    second = jobs.listings.page("site_a", limit=2, cursor=first.next_cursor)
    assert [v.job_id for v in second.jobs] == [job_id(4), job_id(2)]
    last = jobs.listings.page("site_a", limit=2, cursor=second.next_cursor)
    assert [v.job_id for v in last.jobs] == [job_id(1)] and last.next_cursor is None
    exact = jobs.listings.page("site_a", limit=6)
    assert exact.count == 6 and exact.next_cursor is None  # a full last page says so


@pytest.mark.parametrize(
    "cursor", ["", "abc", "!!!!", "MA", "MDA", encode_cursor(5) + "=", "é", "LTE", "MTIz\n"]
)
def test_a_malformed_cursor_is_a_validation_error(jobs: Jobs, cursor: str) -> None:
    with pytest.raises(InvalidCursor) as info:
        jobs.listings.page("site_a", cursor=cursor)
    assert (info.value.code, info.value.status) == ("ValidationError", 422)
    assert "cursor" in str(info.value)


def test_cursors_round_trip_and_limit_must_be_positive(jobs: Jobs) -> None:
    assert all(decode_cursor(encode_cursor(p)) == p for p in (1, 9, 10, 12345678901234))
    with pytest.raises(ValueError, match="limit"):
        jobs.listings.page("site_a", limit=0)


def test_the_listings_survive_dump_and_load(jobs: Jobs) -> None:
    copy = JobListings(jobs.model.jobs)
    copy.load(jobs.listings.dump())
    assert copy == jobs.listings
    assert copy.page("site_a", user_id="u1") == jobs.listings.page("site_a", user_id="u1")


job_strategy = st.tuples(
    st.sampled_from(["site_a", "site_b"]),
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(["ai_evaluation", "report"]),
    st.sampled_from(sorted(ENDINGS)),
)


@settings(max_examples=60, deadline=None)
@given(
    all_jobs=st.lists(job_strategy, max_size=40),
    limit=st.integers(1, 7),
    user=st.none() | st.sampled_from(["u1", "u2"]),
    kind=st.none() | st.sampled_from(["ai_evaluation", "report"]),
    statuses=st.none() | st.frozensets(st.sampled_from(sorted(ENDINGS)), min_size=1),
)
def test_cursor_paging_visits_every_matching_job_once(
    all_jobs: list[Job],
    limit: int,
    user: str | None,
    kind: str | None,
    statuses: frozenset[str] | None,
) -> None:
    jobs = Jobs()
    for n, job in enumerate(all_jobs, start=1):
        jobs.add(n, job)
    expected = [
        job_id(n)
        for n, (site, u, k, status) in reversed(list(enumerate(all_jobs, start=1)))
        if site == "site_a"
        and user in (None, u)
        and kind in (None, k)
        and (statuses is None or status in statuses)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = jobs.listings.page(
            "site_a", user_id=user, job_type=kind, statuses=statuses, limit=limit, cursor=cursor
        )
        assert page.count <= limit
        assert page.count == limit or page.next_cursor is None
        seen += [v.job_id for v in page.jobs]
        if page.next_cursor is None:
            break
        assert page.count == limit
        cursor = page.next_cursor
    assert seen == expected
