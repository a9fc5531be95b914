"""Idempotency-Key: a repeat of an accepted request gets the first answer and makes nothing.

The first answer is stored as an event of its own stream, `idem:<site>:<user>:<sha256 of
the key>`, appended in the SAME atomic append as the job it created, so every serve
process sees it, and two racing repeats cannot both create: the loser's append
conflicts on that stream, it re-reads, and answers what the winner stored. A key is kept
24 hours; rejected requests are not remembered (nothing is appended for them).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

import msgspec
from starlette.requests import Request

from eventstore import AppendTo, EventStore, new, streams
from eventstore.events import IdempotencyKeyUsed
from service.auth import Principal
from service.errors import IdempotencyKeyReused, InvalidHeader

KEEP = timedelta(hours=24)
_KEY = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")
_CANONICAL = msgspec.json.Encoder(order="sorted")


class Remembered(msgspec.Struct, frozen=True):
    """A stored first answer."""

    status: int
    response: dict[str, Any]
    job_id: str


class Key(msgspec.Struct, frozen=True):
    """A request's Idempotency-Key, where it is kept, and the hash of what it asked for."""

    stream: str
    request_sha256: str


def key_of(request: Request, who: Principal, body: Any) -> Key | None:
    """The request's key (400 InvalidHeader if malformed), or None without the header."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if _KEY.fullmatch(raw) is None:
        raise InvalidHeader("Idempotency-Key must be 1-255 printable ASCII characters.")
    key_hash = hashlib.sha256(raw.encode()).hexdigest()
    canonical = _CANONICAL.encode({"path": request.url.path, "body": body})
    return Key(
        streams.idempotency(who.site_id, who.user_id, key_hash),
        hashlib.sha256(canonical).hexdigest(),
    )


async def recall(store: EventStore, key: Key, now: datetime) -> tuple[Remembered | None, int]:
    """The first answer for this key if kept (422 for another body), and the stream version."""
    events = await store.read_stream(key.stream)
    if not events:
        return None, 0
    last = events[-1]
    event = last.event
    assert isinstance(event, IdempotencyKeyUsed)
    if now - last.recorded_at >= KEEP:
        return None, last.version  # expired: the key may be used again
    if event.request_sha256 != key.request_sha256:
        raise IdempotencyKeyReused("This Idempotency-Key was used with another request.")
    return Remembered(event.status, event.response, event.job_id), last.version


def remember(
    key: Key, version: int, job_id: str, status: int, response: dict[str, Any]
) -> AppendTo:
    """The append that stores the answer, to go in the same append_many as the job."""
    used = IdempotencyKeyUsed(
        request_sha256=key.request_sha256, job_id=job_id, status=status, response=response
    )
    return AppendTo(key.stream, [new(used)], version)
