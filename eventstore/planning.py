"""Deciding an append, shared by every backend: concurrency check, idempotency, numbering.

Kept pure (the backend passes in how to read versions and look up ids) so that the
memory store, the file store and the PostgreSQL store give the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from eventstore import streams
from eventstore.errors import JobtrailError, WrongExpectedVersion
from eventstore.records import AppendTo, RecordedEvent

ANY = -1


class DuplicateEventIds(JobtrailError):
    """One append names the same event id twice."""

    code = "ValidationError"
    status = 422


def validate(batch: Sequence[AppendTo]) -> None:
    """Check stream names and event ids before anything is decided or written."""
    seen: set[str] = set()
    names: set[str] = set()
    for item in batch:
        streams.check(item.stream)
        if item.stream in names:
            raise DuplicateEventIds(f"stream {item.stream!r} appears twice in one append")
        names.add(item.stream)
        if item.expected_version < ANY:
            raise WrongExpectedVersion(item.stream, item.expected_version, -1)
        for e in item.events:
            if e.id in seen:
                raise DuplicateEventIds(f"event id {e.id} appears twice in one append")
            seen.add(e.id)


def plan(
    batch: Sequence[AppendTo],
    *,
    version_of: Callable[[str], int],
    lookup: Callable[[str, str], RecordedEvent | None],
    next_position: int,
    now: datetime,
) -> tuple[list[list[RecordedEvent]], bool]:
    """The recorded events per stream, and whether they are new (False: an idempotent retry).

    Raises WrongExpectedVersion when a stream moved on and the append is not a retry.
    """
    first = next((item for item in batch if item.events), None)
    if first is not None and first.expected_version != version_of(first.stream):
        # Not a fresh append at the expected version: a retry of one already stored?
        found = lookup(first.stream, first.events[0].id)
        if found is not None:
            return _already_recorded(batch, lookup, found), False
    versions = []
    for item in batch:
        current = version_of(item.stream)
        if item.expected_version != ANY and item.expected_version != current:
            raise WrongExpectedVersion(item.stream, item.expected_version, current)
        versions.append(current)
    out: list[list[RecordedEvent]] = []
    position = next_position
    for item, version in zip(batch, versions, strict=True):
        recorded = []
        for e in item.events:
            version += 1
            recorded.append(RecordedEvent(position, item.stream, version, e.id, now, e.event))
            position += 1
        out.append(recorded)
    return out, True


def _already_recorded(
    batch: Sequence[AppendTo],
    lookup: Callable[[str, str], RecordedEvent | None],
    found: RecordedEvent,
) -> list[list[RecordedEvent]]:
    out = []
    for item in batch:
        recorded = []
        for e in item.events:
            r = lookup(item.stream, e.id)
            if r is None:
                # Part of the append is stored and part is not: not a retry of one append.
                raise WrongExpectedVersion(item.stream, item.expected_version, found.version)
            recorded.append(r)
        out.append(recorded)
    return out
