"""The stored envelope of an event and its msgpack codec, built once.

The envelope is array-like on disk (compact, fast to decode); the service turns it into
the API's JSON event. `NewEvent` is what callers append: an event plus its id, which
makes a retried append a no-op.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from eventstore.events import AnyEvent, Event, event_type


class RecordedEvent(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An event as stored: its stream, version in it, global position, id and time."""

    position: int
    stream: str
    version: int
    id: str
    recorded_at: datetime
    event: AnyEvent

    @property
    def type(self) -> str:
        return event_type(self.event)


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append, with the id that makes a retried append idempotent."""

    event: AnyEvent
    id: str


class AppendTo(msgspec.Struct, frozen=True):
    """The events to append to one stream, and the version the caller read."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: int


def new_event_id() -> str:
    """A fresh event id: a UUIDv7 (time-ordered), as a lowercase string."""
    h = f"{_uuid7_int(None):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_random = random.Random()  # seeded from os.urandom; ids need uniqueness, not secrecy
os.register_at_fork(after_in_child=_random.seed)  # a forked child must not repeat ids


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits (RFC 9562)."""
    return uuid.UUID(int=_uuid7_int(unix_ms))


def _uuid7_int(unix_ms: int | None) -> int:
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    value = (ms & ((1 << 48) - 1)) << 80 | _random.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    return (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant


def new(event: Event, event_id: str | None = None) -> NewEvent:
    """Wrap an event for appending, with a fresh id unless one is given."""
    return NewEvent(event=event, id=event_id or new_event_id())  # type: ignore[arg-type]


def as_new_events(events: Sequence[Event | NewEvent]) -> list[NewEvent]:
    return [e if isinstance(e, NewEvent) else new(e) for e in events]


ENCODER: Final = msgspec.msgpack.Encoder()
RECORD_DECODER: Final = msgspec.msgpack.Decoder(list[RecordedEvent])
EVENT_DECODER: Final = msgspec.msgpack.Decoder(RecordedEvent)


def encode_each(events: Sequence[RecordedEvent]) -> list[bytes]:
    """Encode envelopes one by one, so the same bytes go to the feed and the stream."""
    return [ENCODER.encode(e) for e in events]


def pack(encoded: Sequence[bytes]) -> bytes:
    """A record payload: a msgpack array of already-encoded envelopes."""
    return ENCODER.encode([msgspec.Raw(b) for b in encoded])


def unpack(payload: bytes | memoryview) -> list[RecordedEvent]:
    return RECORD_DECODER.decode(payload)
