"""Stream names are built, validated and parsed here, and nowhere else.

A name is `category:part[:part]`. Parts are ids of `A-Za-z0-9_-` (1-64 chars), job ids
are lowercase UUIDs and months are `YYYY-MM`, so `:` never occurs inside a part and two
sites' names never collide. Every id is checked before it can reach a file name.
"""

from __future__ import annotations

import functools
import re
from typing import Final, NamedTuple

from eventstore.errors import InvalidId

_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_MONTH: Final = re.compile(r"([0-9]{4})-([0-9]{2})")

JOB: Final = "job"
USAGE: Final = "usage"
LEAD: Final = "lead"
SITE: Final = "site"
IDEMPOTENCY: Final = "idem"
PRUNED: Final = "pruned"


class StreamName(NamedTuple):
    category: str
    parts: tuple[str, ...]


def valid_id(value: str, what: str = "id") -> str:
    """Return `value` if it is a site, user, lead or document id; raise InvalidId otherwise."""
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidId(f"{what} must be 1-64 characters of A-Za-z0-9_-")
    return value


def valid_job_id(value: str) -> str:
    """Return the job id in lowercase canonical form; raise InvalidId unless it is a UUID."""
    if not isinstance(value, str) or _UUID.fullmatch(value) is None:
        raise InvalidId("job id must be a UUID in 8-4-4-4-12 hex form")
    return value.lower()


def valid_month(value: str) -> str:
    """Return a `YYYY-MM` month; raise InvalidId for another form or an impossible month."""
    m = _MONTH.fullmatch(value) if isinstance(value, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1:
        raise InvalidId("month must be YYYY-MM")
    return value


def job(job_id: str) -> str:
    return f"{JOB}:{valid_job_id(job_id)}"


def usage(site_id: str, month: str) -> str:
    return f"{USAGE}:{valid_id(site_id, 'site id')}:{valid_month(month)}"


def lead(site_id: str, lead_id: str) -> str:
    return f"{LEAD}:{valid_id(site_id, 'site id')}:{valid_id(lead_id, 'lead id')}"


def site(site_id: str) -> str:
    return f"{SITE}:{valid_id(site_id, 'site id')}"


def idempotency(site_id: str, user_id: str, key_hash: str) -> str:
    """The stream remembering one Idempotency-Key of a site's user (by the key's hash)."""
    return (
        f"{IDEMPOTENCY}:{valid_id(site_id, 'site id')}:{valid_id(user_id, 'user id')}:"
        f"{valid_id(key_hash, 'key hash')}"
    )


def pruned(site_id: str) -> str:
    """The stream of a site's tombstones: one `job_pruned` per job removed by retention."""
    return f"{PRUNED}:{valid_id(site_id, 'site id')}"


_BUILDERS: Final = {JOB: 1, USAGE: 2, LEAD: 2, SITE: 1, IDEMPOTENCY: 3, PRUNED: 1}


def parse(name: str) -> StreamName:
    """Split and validate a stream name; raise InvalidId for anything not built above."""
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidId("malformed stream name")
    category, _, rest = name.partition(":")
    arity = _BUILDERS.get(category)
    parts = tuple(rest.split(":")) if rest else ()
    if arity is None or len(parts) != arity:
        raise InvalidId(f"malformed stream name {name[:80]!r}")
    if category == JOB:
        if job(parts[0]) != name:
            raise InvalidId("job stream ids are lowercase UUIDs")
    elif category == USAGE:
        usage(parts[0], parts[1])
    elif category == LEAD:
        lead(parts[0], parts[1])
    elif category == IDEMPOTENCY:
        idempotency(parts[0], parts[1], parts[2])
    elif category == PRUNED:
        pruned(parts[0])
    else:
        site(parts[0])
    return StreamName(category, parts)


@functools.lru_cache(maxsize=65536)
def check(name: str) -> str:
    """`parse`, remembered: appends name the same streams again and again."""
    parse(name)
    return name


def job_id_of(name: str) -> str | None:
    """The job id of a `job:` stream name, or None for any other stream."""
    return name[4:] if name.startswith("job:") else None
