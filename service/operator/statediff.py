"""What differs between two read models, projection by projection, entity by entity.

`jobtrail replay` compares a rebuild from the events with the live projections (the
checkpoint serve processes save). Equality is each projection's own `==`; the entities and
fields listed are there to say where to look, and are bounded.
"""

from __future__ import annotations

from array import array
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from projections.model import ReadModel
from projections.usage import MonthUsage, SiteSettings

MAX_LISTED: Final = 20
"""Entities listed per projection; the rest are counted."""

MAX_SHOWN: Final = 80
"""Characters of a value shown in a difference."""


class FieldDiff(msgspec.Struct, frozen=True):
    field: str
    live: Any
    rebuilt: Any


class EntityDiff(msgspec.Struct, frozen=True):
    """One entity (a job, a lead, a listing index...) that is not the same in both."""

    key: str
    only_in: Literal["live", "rebuilt"] | None = None
    fields: list[FieldDiff] = []


class ProjectionDiff(msgspec.Struct, frozen=True):
    name: str
    same: bool
    live: int  # entities in the live projection
    rebuilt: int  # entities in the rebuild
    differences: list[EntityDiff] = []
    unlisted: int = 0  # differing entities beyond those listed


class _UsageState(msgspec.Struct, frozen=True):
    """The shape of `UsageTable.dump()`, read here only to name what differs."""

    sites: list[SiteSettings]
    months: list[MonthUsage]


class _ListingIndex(msgspec.Struct, frozen=True, array_like=True):
    """The shape of one entry of `JobListings.dump()`."""

    site_id: str
    user_id: str | None
    job_type: str | None
    positions: bytes
    ids: list[str]


_USAGE: Final = msgspec.msgpack.Decoder(_UsageState)
_LISTINGS: Final = msgspec.msgpack.Decoder(list[_ListingIndex])


def entities(model: ReadModel, name: str) -> dict[str, Any] | None:
    """A projection's state as entities by key; None when its shape is not known here."""
    try:
        if name == "jobs":
            return {v.job_id: v for v in model.jobs}
        if name == "leads":
            return {f"{v.site_id}/{v.lead_id}": v for v in model.leads}
        if name == "usage":
            usage = _USAGE.decode(model.usage.dump())
            out: dict[str, Any] = {f"site {s.site_id}": s for s in usage.sites}
            out.update({f"{m.site_id} {m.month}": m for m in usage.months})
            return out
        if name == "listings":
            listings: dict[str, Any] = {}
            for i in _LISTINGS.decode(model.listings.dump()):
                positions = array("q")
                positions.frombytes(i.positions)
                key = f"{i.site_id}/{i.user_id or '*'}/{i.job_type or '*'}"
                listings[key] = {"positions": positions.tolist(), "ids": i.ids}
            return listings
    except msgspec.DecodeError:
        return None  # another shape than this module knows: equality still decides
    return None


def compare(live: ReadModel, rebuilt: ReadModel) -> list[ProjectionDiff]:
    """Each projection: the same, or which entities differ (at most MAX_LISTED listed)."""
    out = []
    for mine, theirs in zip(live.projections, rebuilt.projections, strict=True):
        name = mine.name
        same = mine == theirs
        a, b = entities(live, name), entities(rebuilt, name)
        counts = (len(a) if a is not None else -1, len(b) if b is not None else -1)
        if same:
            out.append(ProjectionDiff(name, True, *counts))
            continue
        differing = _differences(a, b) if a is not None and b is not None else []
        out.append(
            ProjectionDiff(
                name,
                False,
                *counts,
                differences=differing[:MAX_LISTED],
                unlisted=max(len(differing) - MAX_LISTED, 0),
            )
        )
    return out


def _differences(live: dict[str, Any], rebuilt: dict[str, Any]) -> list[EntityDiff]:
    out: list[EntityDiff] = []
    for key, value in live.items():
        other = rebuilt.get(key)
        if other is None:
            out.append(EntityDiff(key, "live"))
        elif other != value:
            out.append(EntityDiff(key, None, _fields(value, other)))
    out.extend(EntityDiff(key, "rebuilt") for key in rebuilt if key not in live)
    return out


def _fields(live: Any, rebuilt: Any) -> list[FieldDiff]:
    if isinstance(live, msgspec.Struct) and type(live) is type(rebuilt):
        return [
            FieldDiff(name, show(getattr(live, name)), show(getattr(rebuilt, name)))
            for name in live.__struct_fields__
            if getattr(live, name) != getattr(rebuilt, name)
        ]
    if isinstance(live, dict) and isinstance(rebuilt, dict):
        return [
            FieldDiff(name, show(live.get(name)), show(rebuilt.get(name)))
            for name in {**live, **rebuilt}
            if live.get(name) != rebuilt.get(name)
        ]
    return [FieldDiff("value", show(live), show(rebuilt))]


def show(value: Any) -> Any:
    """A value as JSON can hold it, cut to MAX_SHOWN characters when it is long."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, datetime):
        return value.isoformat()
    elif not isinstance(value, str | int | float | bool | None):
        value = msgspec.json.encode(value, enc_hook=repr).decode()
    if isinstance(value, str) and len(value) > MAX_SHOWN:
        return value[: MAX_SHOWN - 3] + "..."
    return value


def describe(diff: ProjectionDiff) -> list[str]:
    """The lines `jobtrail replay` prints for one projection."""
    size = f"{diff.live} entries" if diff.live >= 0 else "state"
    if diff.same:
        return [f"{diff.name:9} same ({size})"]
    lines = [f"{diff.name:9} DIFFERENT (live {_count(diff.live)}, rebuilt {_count(diff.rebuilt)})"]
    for d in diff.differences:
        if d.only_in is not None:
            lines.append(f"  {d.key}: only in the {d.only_in} projection")
        else:
            changes = ", ".join(
                f"{f.field} (live {f.live!r}, rebuilt {f.rebuilt!r})" for f in d.fields
            )
            lines.append(f"  {d.key}: {changes}")
    if diff.unlisted:
        lines.append(f"  ... and {diff.unlisted} more")
    if not diff.differences:
        lines.append("  (the states differ; their entries are not listed for this projection)")
    return lines


def _count(n: int) -> str:
    return f"{n} entries" if n >= 0 else "?"
