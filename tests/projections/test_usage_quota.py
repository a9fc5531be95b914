"""Quota settings by month, usage answers, and the reservation decision against a real store."""

from __future__ import annotations

from functools import reduce

import pytest

from eventstore import ANY, AppendTo, InvalidId, MemoryStore, WrongExpectedVersion, new
from eventstore.events import AnyEvent, QuotaReserved, QuotaSet
from eventstore.records import RecordedEvent
from projections import (
    DEFAULT_QUOTA,
    Quota,
    SiteSettings,
    Usage,
    UsageTable,
    apply_settings,
    apply_usage,
    decide_reservation,
    may_reserve,
)

from .builders import history, job_id, job_stream, requested

SITE = "site:site_a"


def quota_set(limit: int, from_month: str, tier: str = "pro") -> QuotaSet:
    return QuotaSet(limit=limit, tier=tier, from_month=from_month)


def settings_of(events: list[AnyEvent]) -> SiteSettings | None:
    return reduce(apply_settings, history(SITE, events), None)


def test_a_site_without_settings_has_the_free_default() -> None:
    table = UsageTable()
    assert table.quota("site_a", "2026-11") == DEFAULT_QUOTA == Quota(limit=20, tier="free")
    assert table.usage("site_a", "2026-11") == Usage(
        used=0, limit=20, remaining=20, month="2026-11", tier="free"
    )


def test_a_setting_holds_from_its_month_until_changed() -> None:
    settings = settings_of([quota_set(50, "2026-03"), quota_set(10, "2026-06", "small")])
    assert settings is not None and settings.version == 2
    assert settings.quota("2026-02") == DEFAULT_QUOTA
    assert settings.quota("2026-03").limit == 50
    assert settings.quota("2026-05").limit == 50
    assert settings.quota("2026-06") == Quota(limit=10, tier="small", from_month="2026-06")
    assert settings.quota("2031-01").limit == 10


def test_a_later_setting_from_an_earlier_month_replaces_the_ones_after_it() -> None:
    settings = settings_of([quota_set(10, "2026-06"), quota_set(50, "2026-03")])
    assert settings is not None
    assert [q.from_month for q in settings.periods] == ["2026-03"]
    assert settings.quota("2026-07").limit == 50
    same_month = settings_of([quota_set(10, "2026-06"), quota_set(7, "2026-06")])
    assert same_month is not None and same_month.quota("2026-06").limit == 7


def test_used_counts_reservations_and_remaining_never_goes_negative() -> None:
    table = UsageTable()
    usage_stream = "usage:site_a:2026-11"
    events: list[AnyEvent] = [QuotaReserved(job_id=job_id(i)) for i in range(1, 6)]
    for r in history(usage_stream, events):
        table.apply(r)
    for r in history(SITE, [quota_set(3, "2026-11", "tiny")], first=6):
        table.apply(r)
    assert table.usage("site_a", "2026-11") == Usage(
        used=5, limit=3, remaining=0, month="2026-11", tier="tiny"
    )
    month = table.month("site_a", "2026-11")
    assert month is not None and (month.used, month.version) == (5, 5)
    assert table.usage("site_a", "2026-10") == Usage(
        used=0, limit=20, remaining=20, month="2026-10", tier="free"
    )
    assert table.usage("site_b", "2026-11").used == 0
    with pytest.raises(InvalidId):
        table.usage("site_a", "2026-13")


def test_folds_ignore_events_of_other_streams() -> None:
    stray = history(SITE, [QuotaReserved(job_id=job_id(1))])[0]
    assert apply_usage(None, stray) is None
    misplaced = history("usage:site_a:2026-01", [quota_set(1, "2026-01")])[0]
    assert apply_settings(None, misplaced) is None
    table = UsageTable()
    table.apply(stray)
    table.apply(history(job_stream(1), [requested()])[0])
    assert table == UsageTable()


def test_the_table_survives_dump_and_load() -> None:
    table = UsageTable()
    records: list[RecordedEvent] = [
        *history(SITE, [quota_set(3, "2026-01"), quota_set(9, "2026-04")]),
        *history("usage:site_a:2026-04", [QuotaReserved(job_id=job_id(1))], first=3),
    ]
    for r in records:
        table.apply(r)
    copy = UsageTable()
    copy.load(table.dump())
    assert copy == table
    assert copy.usage("site_a", "2026-04") == table.usage("site_a", "2026-04")


def test_may_reserve_while_used_is_below_the_limit() -> None:
    assert may_reserve(19, DEFAULT_QUOTA) and not may_reserve(20, DEFAULT_QUOTA)
    assert not may_reserve(0, Quota(limit=0, tier="off"))


@pytest.mark.anyio
async def test_an_allowed_reservation_appends_with_both_versions_checked() -> None:
    store = MemoryStore()
    await store.append(SITE, [quota_set(2, "2026-11")], ANY)
    settings = settings_of([quota_set(2, "2026-11")])
    decision = decide_reservation(
        "site_a", "2026-11", usage_version=0, settings=settings, job_id=job_id(1), event_id="e1"
    )
    assert decision.allowed
    assert decision.usage == Usage(used=1, limit=2, remaining=1, month="2026-11", tier="pro")
    assert [(a.stream, a.expected_version) for a in decision.appends] == [
        ("usage:site_a:2026-11", 0),
        ("site:site_a", 1),
    ]
    job = AppendTo(job_stream(1), [new(requested())], 0)
    await store.append_many([*decision.appends, job])
    assert await store.stream_version("usage:site_a:2026-11") == 1
    full = decide_reservation(
        "site_a", "2026-11", usage_version=2, settings=settings, job_id=job_id(2), event_id="e2"
    )
    assert not full.allowed and full.appends == ()
    assert full.usage == Usage(used=2, limit=2, remaining=0, month="2026-11", tier="pro")


@pytest.mark.anyio
async def test_a_limit_lowered_meanwhile_makes_the_reservation_conflict() -> None:
    store = MemoryStore()
    decision = decide_reservation(
        "site_a", "2026-11", usage_version=0, settings=None, job_id=job_id(1), event_id="e1"
    )
    assert decision.allowed and decision.appends[1].expected_version == 0
    await store.append(SITE, [quota_set(0, "2026-11")], ANY)  # the admin came first
    with pytest.raises(WrongExpectedVersion):
        await store.append_many(decision.appends)
    assert await store.stream_version("usage:site_a:2026-11") == 0
