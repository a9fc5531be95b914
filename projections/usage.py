"""Per-site quota settings and monthly usage, and the pure decision to reserve one unit.

`site:<site>` holds `QuotaSet` events; a setting holds from its `from_month` on until a later
event changes it. `usage:<site>:<YYYY-MM>` holds one `QuotaReserved` per accepted evaluation
job, so its version is the month's `used`. A reservation appends to the usage stream with the
version that was read and checks the site stream's version in the same append, so concurrent
creates (or an admin lowering the limit meanwhile) can never push `used` past `limit`.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

import msgspec
from msgspec.structs import replace

from eventstore import streams
from eventstore.events import QuotaReserved, QuotaSet
from eventstore.records import AppendTo, NewEvent, RecordedEvent
from eventstore.store import NO_STREAM, EventStore

DEFAULT_LIMIT: Final = 20
DEFAULT_TIER: Final = "free"


class Quota(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A monthly limit and tier, holding from `from_month` on ("" for the default)."""

    limit: int = DEFAULT_LIMIT
    tier: str = DEFAULT_TIER
    from_month: str = ""


DEFAULT_QUOTA: Final = Quota()


class SiteSettings(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A site's quota settings; `periods` is sorted by `from_month`, each until the next."""

    site_id: str
    periods: tuple[Quota, ...] = ()
    version: int = 0

    def quota(self, month: str) -> Quota:
        """The setting that holds in `month`: the latest period starting at or before it."""
        i = bisect_right(self.periods, month, key=lambda q: q.from_month)
        return self.periods[i - 1] if i else DEFAULT_QUOTA


class MonthUsage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A site's reservations in one month; `used` equals the usage stream's version."""

    site_id: str
    month: str
    used: int = 0
    version: int = 0


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """The API's usage answer for one site and month."""

    used: int
    limit: int
    remaining: int
    month: str
    tier: str


def apply_settings(view: SiteSettings | None, recorded: RecordedEvent) -> SiteSettings | None:
    """Fold one event of a `site:` stream; a later setting replaces those from its month on."""
    match recorded.event:
        case QuotaSet(limit=limit, tier=tier, from_month=from_month):
            if view is None:
                name = streams.parse(recorded.stream)
                if name.category != streams.SITE:
                    return None
                view = SiteSettings(site_id=name.parts[0])
            # Every month at or after `from_month` now takes this setting, so any period that
            # starts there is superseded for good: dropping it keeps `periods` sorted and small.
            kept = tuple(p for p in view.periods if p.from_month < from_month)
            period = Quota(limit=limit, tier=tier, from_month=from_month)
            return replace(view, periods=(*kept, period), version=recorded.version)
        case _:
            return view


async def load_site_settings(store: EventStore, site_id: str) -> SiteSettings | None:
    """The site's quota settings folded from its own stream (current in every process)."""
    settings = None
    for recorded in await store.read_stream(streams.site(site_id)):
        settings = apply_settings(settings, recorded)
    return settings


async def load_usage(store: EventStore, site_id: str, month: str) -> Usage:
    """The site's usage of `month` as the store holds it now."""
    used = await store.stream_version(streams.usage(site_id, month))
    settings = await load_site_settings(store, site_id)
    quota = settings.quota(month) if settings is not None else DEFAULT_QUOTA
    return usage_of(used, quota, month)


def apply_usage(view: MonthUsage | None, recorded: RecordedEvent) -> MonthUsage | None:
    """Fold one event of a `usage:` stream: each reservation uses one unit."""
    match recorded.event:
        case QuotaReserved():
            if view is None:
                name = streams.parse(recorded.stream)
                if name.category != streams.USAGE:
                    return None
                view = MonthUsage(site_id=name.parts[0], month=name.parts[1])
            return replace(view, used=view.used + 1, version=recorded.version)
        case _:
            return view


def usage_of(used: int, quota: Quota, month: str) -> Usage:
    """The usage answer; `remaining` is never negative, even after a limit was lowered."""
    return Usage(
        used=used,
        limit=quota.limit,
        remaining=max(quota.limit - used, 0),
        month=month,
        tier=quota.tier,
    )


def may_reserve(usage_version: int, quota: Quota) -> bool:
    """Whether one more unit fits, given the usage stream's version (= `used`) that was read."""
    return usage_version < quota.limit


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """The decision on one reservation and, when allowed, the appends that make it safe.

    `usage` is the answer to give: after the reservation when allowed, as read when not.
    Append `appends` together with the job's own events in one `append_many`; a
    `WrongExpectedVersion` means another create or a settings change came first: re-read
    and decide again.
    """

    allowed: bool
    usage: Usage
    appends: tuple[AppendTo, ...] = ()


def decide_reservation(
    site_id: str,
    month: str,
    *,
    usage_version: int,
    settings: SiteSettings | None,
    job_id: str,
    event_id: str,
) -> Reservation:
    """Decide one reservation from the versions read; pure, so the caller owns ids and I/O."""
    quota = settings.quota(month) if settings is not None else DEFAULT_QUOTA
    if not may_reserve(usage_version, quota):
        return Reservation(allowed=False, usage=usage_of(usage_version, quota, month))
    reserved = NewEvent(event=QuotaReserved(job_id=job_id), id=event_id)
    site_version = settings.version if settings is not None else NO_STREAM
    appends = (
        AppendTo(streams.usage(site_id, month), [reserved], usage_version),
        AppendTo(streams.site(site_id), [], site_version),
    )
    return Reservation(
        allowed=True, usage=usage_of(usage_version + 1, quota, month), appends=appends
    )


class _State(msgspec.Struct, frozen=True):
    sites: list[SiteSettings]
    months: list[MonthUsage]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_State)


class UsageTable:
    """Settings per site and usage per site and month; owns its dicts."""

    name = "usage"
    folds: Final = (QuotaSet, QuotaReserved)
    """The only event types `apply` folds: a fold over the feed may skip the others."""

    def __init__(self) -> None:
        self._sites: dict[str, SiteSettings] = {}
        self._months: dict[tuple[str, str], MonthUsage] = {}

    def apply(self, recorded: RecordedEvent) -> None:
        """Fold one feed event in; events of other streams are ignored."""
        if not isinstance(recorded.event, self.folds):
            return  # the cheap test first: most of the feed is job events
        category, parts = streams.parse(recorded.stream)
        if category == streams.SITE:
            settings = apply_settings(self._sites.get(parts[0]), recorded)
            if settings is not None:
                self._sites[parts[0]] = settings
        elif category == streams.USAGE:
            key = (parts[0], parts[1])
            usage = apply_usage(self._months.get(key), recorded)
            if usage is not None:
                self._months[key] = usage

    def settings(self, site_id: str) -> SiteSettings | None:
        return self._sites.get(site_id)

    def month(self, site_id: str, month: str) -> MonthUsage | None:
        return self._months.get((site_id, month))

    def quota(self, site_id: str, month: str) -> Quota:
        settings = self._sites.get(site_id)
        return settings.quota(month) if settings is not None else DEFAULT_QUOTA

    def usage(self, site_id: str, month: str) -> Usage:
        """`{used, limit, remaining, month, tier}` of a site in a `YYYY-MM` month."""
        streams.valid_month(month)
        month_usage = self._months.get((site_id, month))
        used = month_usage.used if month_usage is not None else 0
        return usage_of(used, self.quota(site_id, month), month)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UsageTable)
            and self._sites == other._sites
            and self._months == other._months
        )

    __hash__ = None  # type: ignore[assignment]

    def dump(self) -> bytes:
        return _ENCODER.encode(_State(list(self._sites.values()), list(self._months.values())))

    def load(self, data: bytes) -> None:
        state = _DECODER.decode(data)
        self._sites = {s.site_id: s for s in state.sites}
        self._months = {(m.site_id, m.month): m for m in state.months}
