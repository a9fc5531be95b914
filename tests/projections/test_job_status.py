"""Golden histories of one job, and the transitions the rules forbid."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventstore.events import AnyEvent, QuotaSet
from projections import JobTable, JobView, apply_job, illegal_transition

from .builders import (
    T0,
    cancelled,
    completed,
    failed,
    fold,
    history,
    job_id,
    job_stream,
    progressed,
    requested,
    retried,
    started,
)

STREAM = job_stream(1)


def views(events: list[AnyEvent]) -> list[JobView]:
    """The view after each event, asserting each step is legal."""
    out: list[JobView] = []
    view: JobView | None = None
    for r in history(STREAM, events):
        assert illegal_transition(view, r) is None, r.event
        view = apply_job(view, r)
        assert view is not None
        out.append(view)
    return out


def at(position: int) -> object:
    return T0 + timedelta(seconds=position)


def test_three_timeouts_end_failed_as_the_api_shows() -> None:
    steps = views(
        [
            requested(max_retries=3),
            started(1),
            failed(1, will_retry=True),
            retried(60),
            started(2),
            failed(2, will_retry=True),
            retried(120),
            started(3),
            failed(3),
        ]
    )
    first = steps[0]
    assert (first.status, first.job_id, first.job_type, first.site_id, first.user_id) == (
        "pending",
        job_id(1),
        "ai_evaluation",
        "site_a",
        "user_1",
    )
    assert first.params == {"lead_id": "lead_1"} and first.metadata == {"lead_id": "lead_1"}
    assert (first.created_at, first.progress, first.progress_message, first.error) == (
        at(1),
        0,
        "",
        None,
    )
    running = steps[1]
    assert (running.status, running.attempt, running.started_at) == ("running", 1, at(2))
    assert running.worker_id == "worker-1" and running.lease_expires_at == T0 + timedelta(hours=1)
    waiting = steps[2]  # failed, a retry to come, not yet scheduled
    assert (waiting.status, waiting.retry_count) == ("pending", 1)
    assert waiting.error_code == "ModelTimeout"
    assert waiting.next_attempt_at is None and waiting.error == "ModelTimeout on attempt 1"
    scheduled = steps[3]
    assert scheduled.status == "pending" and scheduled.next_attempt_at == T0 + timedelta(seconds=60)
    second = steps[4]
    assert (second.status, second.attempt, second.started_at) == ("running", 2, at(5))
    assert second.next_attempt_at is None
    final = steps[-1]
    assert (final.status, final.attempt, final.retry_count) == ("failed", 3, 3)
    assert final.error_code == "ModelTimeout" and final.error == "ModelTimeout on attempt 3"
    assert not final.can_retry and final.is_final
    assert final.started_at == at(8) and final.completed_at is None
    assert (final.version, final.position, final.updated_at) == (9, 9, at(9))


def test_success_with_progress() -> None:
    evaluation = {"id": "eval_1", "score": 82, "label": "A", "risk_flags": []}
    steps = views(
        [
            requested(),
            started(1),
            progressed(45, "Analyzing documents with AI..."),
            progressed(130, "past the end"),
            completed(evaluation),
        ]
    )
    assert (steps[2].progress, steps[2].progress_message) == (45, "Analyzing documents with AI...")
    assert steps[3].progress == 100  # clamped to 0-100
    done = steps[-1]
    assert (done.status, done.progress, done.result) == ("completed", 100, evaluation)
    assert done.completed_at == at(5) and done.started_at == at(2)
    assert done.error is None and done.error_code is None and not done.can_retry


def test_success_after_a_retried_attempt_clears_the_error() -> None:
    done = views([requested(), started(1), failed(1, True), retried(), started(2), completed()])[-1]
    assert (done.status, done.error, done.error_code, done.retry_count) == (
        "completed",
        None,
        None,
        1,
    )


def test_a_pending_job_is_cancelled_at_once() -> None:
    view = views([requested(), cancelled("user_9")])[-1]
    assert (view.status, view.cancelled_at, view.cancelled_by) == ("cancelled", at(2), "user_9")
    assert view.is_final and not view.can_retry and view.started_at is None


def test_a_running_job_ends_cancelled_when_its_handler_stops() -> None:
    view = views([requested(), started(), progressed(10), cancelled()])[-1]
    assert (view.status, view.progress, view.cancelled_at) == ("cancelled", 10, at(4))


def test_cancelling_a_job_waiting_for_a_retry_drops_the_next_attempt() -> None:
    view = views([requested(), started(), failed(1, True), retried(), cancelled()])[-1]
    assert (view.status, view.next_attempt_at, view.error_code) == (
        "cancelled",
        None,
        "ModelTimeout",
    )


def test_a_manual_retry_starts_a_new_round() -> None:
    steps = views(
        [
            requested(max_retries=3),
            started(1),
            failed(1, code="ResourceNotFound"),
            retried(300, manual=True),
            started(1),
            failed(1, will_retry=True),
            retried(),
            started(2),
            completed({"ok": True}),
        ]
    )
    stopped = steps[2]
    assert (stopped.status, stopped.retry_count, stopped.can_retry) == ("failed", 1, True)
    again = steps[3]
    assert (again.status, again.attempt, again.retry_count, again.error, again.error_code) == (
        "pending",
        0,
        0,
        None,
        None,
    )
    assert again.next_attempt_at == T0 + timedelta(seconds=300) and not again.can_retry
    assert (steps[4].status, steps[4].attempt) == ("running", 1)
    assert (steps[-1].status, steps[-1].attempt, steps[-1].retry_count) == ("completed", 2, 1)


ILLEGAL: list[tuple[str, list[AnyEvent], str]] = [
    ("started first", [started()], "started before requested"),
    ("requested twice", [requested(), requested()], "requested twice"),
    (
        "completed twice",
        [requested(), started(), completed(), completed()],
        "completed after completed",
    ),
    (
        "after completed",
        [requested(), started(), completed(), progressed(5)],
        "progressed after completed",
    ),
    ("started twice", [requested(), started(), started(2)], "started while running"),
    ("progress while pending", [requested(), progressed(5)], "progressed while pending"),
    ("completed unstarted", [requested(), completed()], "completed while pending"),
    ("failed unstarted", [requested(), failed()], "failed while pending"),
    ("attempt skipped", [requested(), started(2)], "started attempt 2, expected 1"),
    (
        "started unscheduled",
        [requested(), started(), failed(1, True), started(2)],
        "started before the retry was scheduled",
    ),
    ("retried unfailed", [requested(), retried()], "retried without a failed attempt to retry"),
    (
        "retried twice",
        [requested(), started(), failed(1, True), retried(), retried()],
        "retried without a failed attempt to retry",
    ),
    (
        "retry past the last",
        [requested(max_retries=1), started(), failed(1, True)],
        "will_retry after the last of 1 attempts",
    ),
    (
        "manual of completed",
        [requested(), started(), completed(), retried(manual=True)],
        "manual retry while completed",
    ),
    (
        "manual of running",
        [requested(), started(), retried(manual=True)],
        "manual retry while running",
    ),
    (
        "manual with none left",
        [requested(max_retries=1), started(), failed(), retried(manual=True)],
        "manual retry after 1 of 1 attempts",
    ),
    ("cancelled twice", [requested(), cancelled(), cancelled()], "cancelled after cancelled"),
    (
        "cancel after failed",
        [requested(), started(), failed(), cancelled()],
        "cancelled after failed",
    ),
    (
        "foreign event",
        [requested(), QuotaSet(limit=1, tier="t", from_month="2026-01")],
        "quota_set in a job stream",
    ),
]


@pytest.mark.parametrize(
    ("events", "message"), [c[1:] for c in ILLEGAL], ids=[c[0] for c in ILLEGAL]
)
def test_illegal_transitions_are_named_and_the_fold_goes_on(
    events: list[AnyEvent], message: str
) -> None:
    recorded = history(STREAM, events)
    before = fold(recorded[:-1])
    for i, r in enumerate(recorded[:-1]):
        assert illegal_transition(fold(recorded[:i]), r) is None
    assert illegal_transition(before, recorded[-1]) == message
    after = apply_job(before, recorded[-1])  # never raises
    if before is not None:
        assert after is not None and after.version == len(events)


@pytest.mark.parametrize(
    "events",
    [
        [requested(), started(), completed(), failed()],
        [requested(), cancelled(), started()],
        [requested(), started(), completed(), retried(manual=True)],
        [requested(), requested(site="site_b")],
        [requested(), started(), started(2)],
        [requested(), progressed(50)],
    ],
)
def test_ignored_events_move_only_version_and_position(events: list[AnyEvent]) -> None:
    recorded = history(STREAM, events)
    before = fold(recorded[:-1])
    after = fold(recorded)
    assert before is not None and after is not None
    assert (after.version, after.position) == (len(events), len(events))
    # equal apart from the version and position: updated_at stays that of the last change
    assert after == apply_job(before, recorded[-1])
    assert (after.status, after.updated_at, after.site_id) == (
        before.status,
        before.updated_at,
        before.site_id,
    )


def test_lenient_endings_of_a_pending_job() -> None:
    imported = fold(history(STREAM, [requested(), failed(code="ImportedUnfinished")]))
    assert imported is not None and imported.status == "failed" and imported.can_retry
    assert illegal_transition(None, history(STREAM, [requested()])[0]) is None


def test_events_before_requested_make_no_view() -> None:
    assert fold(history(STREAM, [started(), completed()])) is None
    late = fold(history(STREAM, [started(), requested()]))
    assert late is not None and (late.status, late.version, late.created_position) == (
        "pending",
        2,
        2,
    )


def test_a_value_json_cannot_hold_is_kept_as_text() -> None:
    view = fold(history(STREAM, [requested(), started(), completed(1j)]))
    assert view is not None and view.result == "1j"


def test_table_keeps_one_view_per_job_and_survives_dump_and_load() -> None:
    table = JobTable()
    for r in history(job_stream(1), [requested(), started(), completed({"n": 1})]):
        table.apply(r)
    for r in history(job_stream(2), [requested(user="user_2")], first=4):
        table.apply(r)
    for r in history("site:site_a", [QuotaSet(limit=3, tier="pro", from_month="2026-01")], 5):
        assert table.apply(r) is None
    assert len(table) == 2
    first = table.get(job_id(1))
    assert first is not None and first.status == "completed" and first.result == {"n": 1}
    assert [v.job_id for v in table] == [job_id(1), job_id(2)]
    assert table.get(job_id(3)) is None
    copy = JobTable()
    copy.load(table.dump())
    assert copy == table and copy != JobTable()
