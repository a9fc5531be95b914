"""The history check's small fold names the same rules as `illegal_transition` + `apply_job`.

`HistoryCheck` keeps only what the rules read; these tests hold it to the full fold, on
random job histories, read both as full envelopes and as `rule_events` decodes them.
"""

from __future__ import annotations

import typing
from datetime import timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import (
    AnyEvent,
    JobCancelRequested,
    JobLeaseRenewed,
    JobPruned,
    QuotaSet,
)
from eventstore.records import ENCODER, RecordedEvent
from projections import JobView, apply_job, illegal_transition
from projections.history_check import HistoryCheck
from projections.rule_events import AnyRuleEvent, RuleEnvelope

from .builders import (
    T0,
    cancelled,
    completed,
    failed,
    fold,
    history,
    job_stream,
    progressed,
    requested,
    retried,
    started,
)
from .test_job_status import ILLEGAL

STREAM = job_stream(1)
ONE_RECORD = msgspec.msgpack.Decoder(list[RuleEnvelope])  # a payload, as verify reads it

KINDS: tuple[st.SearchStrategy[AnyEvent], ...] = (
    st.builds(requested, max_retries=st.integers(0, 3)),
    st.builds(started, st.integers(1, 3)),
    st.builds(progressed, st.integers(0, 100)),
    st.builds(completed),
    st.builds(failed, st.integers(1, 3), st.booleans()),
    st.builds(retried, st.just(30), st.booleans()),
    st.builds(cancelled),
    st.builds(JobCancelRequested, by=st.just("u1")),
    st.builds(
        JobLeaseRenewed, attempt=st.integers(0, 4), lease_expires_at=st.just(T0 + timedelta(1))
    ),
    st.just(QuotaSet(limit=1, tier="t", from_month="2026-01")),
    st.just(
        JobPruned(
            job_id="x",
            site_id="s",
            user_id="u",
            job_type="t",
            status="completed",
            finished_at=T0,
            last_version=1,
            created_position=1,
        )
    ),
)
EVENTS = st.one_of(*KINDS)


def _expected(recorded: list[RecordedEvent]) -> list[tuple[str, str, str]]:
    """What the full fold says: each event's broken rule, as `HistoryCheck` words it."""
    out = []
    view: JobView | int | None = None
    for r in recorded:
        version = view.version if isinstance(view, JobView) else view or 0
        if r.version != version + 1:
            out.append(("gap", r.stream, f"version {r.version} follows {version}"))
        rule = illegal_transition(view if isinstance(view, JobView) else None, r)
        if rule is not None:
            out.append(("illegal_transition", r.stream, f"version {r.version}: {rule}"))
        after = apply_job(view if isinstance(view, JobView) else None, r)
        view = after if after is not None else r.version
    return out


def _found(recorded: list[RecordedEvent], light: bool) -> list[tuple[str, str, str]]:
    check = HistoryCheck()
    if light:
        payload = ENCODER.encode([msgspec.Raw(ENCODER.encode(r)) for r in recorded])
        check.check(ONE_RECORD.decode(payload))
    else:
        check.check(recorded)
    return [(f.kind, f.where, f.detail) for f in check.report()]


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, min_size=1, max_size=12), st.booleans())
def test_the_small_fold_names_what_the_full_fold_does(events: list[AnyEvent], light: bool) -> None:
    recorded = history(STREAM, events)
    assert _found(recorded, light) == _expected(recorded)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.booleans())
def test_the_small_fold_agrees_on_mostly_legal_histories(data: st.DataObject, light: bool) -> None:
    """Walks that mostly take a legal next step, so deep states (retries, rounds) occur."""
    events: list[AnyEvent] = [data.draw(st.builds(requested, max_retries=st.integers(0, 3)))]
    for _ in range(data.draw(st.integers(0, 14))):
        recorded = history(STREAM, events)
        view = fold(recorded)
        pool = [data.draw(kind) for kind in KINDS]  # one of each kind
        legal = [
            e for e in pool if illegal_transition(view, history(STREAM, [*events, e])[-1]) is None
        ]
        legal_only = data.draw(st.integers(0, 9)) > 0
        events.append(data.draw(st.sampled_from(legal if legal and legal_only else pool)))
    recorded = history(STREAM, events)
    assert _found(recorded, light) == _expected(recorded)


def test_every_stored_event_type_has_a_light_one() -> None:
    full = {cls.__struct_config__.tag for cls in typing.get_args(AnyEvent)}
    light = {cls.__struct_config__.tag for cls in typing.get_args(AnyRuleEvent)}
    assert full == light
    assert all(cls.type == cls.__struct_config__.tag for cls in typing.get_args(AnyRuleEvent))


DEEP: list[list[AnyEvent]] = [
    [requested(), started(1), failed(1, True), retried(), started(2), completed()],
    [requested(), started(1), failed(1, True), retried(), started(1)],
    [requested(), started(1), failed(1, True), retried(), retried(), started(2)],
    [requested(max_retries=2), started(1), failed(1, True), retried(), started(2), failed(2)],
    [requested(max_retries=2), started(1), failed(1, True), retried(), started(2), failed(2, True)],
    [requested(max_retries=1), started(1), failed(1), retried(manual=True), started(1)],
    [requested(max_retries=1), started(1), failed(1, True), retried(manual=True)],
    [requested(), started(1), failed(1), retried(manual=True), retried(manual=True)],
    [
        requested(max_retries=2),
        started(1),
        failed(1),
        retried(manual=True),
        started(1),
        failed(1, True),
    ],
    [requested(), started(1), cancelled(), retried(manual=True), started(2)],
    [requested(), started(1), JobCancelRequested(by="u"), cancelled(), completed()],
    [requested(), started(1), JobLeaseRenewed(attempt=2, lease_expires_at=T0), completed()],
]


@pytest.mark.parametrize(
    "events", [*DEEP, *(case[1] for case in ILLEGAL)], ids=range(len(DEEP) + len(ILLEGAL))
)
@pytest.mark.parametrize("light", [False, True])
def test_the_small_fold_agrees_on_known_histories(events: list[AnyEvent], light: bool) -> None:
    recorded = history(STREAM, events)
    assert _found(recorded, light) == _expected(recorded)
