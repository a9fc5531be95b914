"""Time as jobtrail records and shows it: aware UTC datetimes, RFC 3339 with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The default clock of stores, the service and workers (tests pass their own)."""
    return datetime.now(UTC)


class SetClock:
    """A clock that says what it was last set to: an importer sets it to each event's
    original time before it commits that event (`FileLog` reads its clock once per commit)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def timestamp(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a `Z`, e.g. `2026-11-22T10:00:05.123Z`."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )
