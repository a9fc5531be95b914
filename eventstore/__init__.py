"""The only package that touches storage: streams, the global feed, and their backends."""

from eventstore.errors import (
    CorruptionError,
    InvalidId,
    JobtrailError,
    StorageError,
    StoreClosed,
    WrongExpectedVersion,
)
from eventstore.memory import MemoryStore
from eventstore.records import AppendTo, NewEvent, RecordedEvent, new, new_event_id
from eventstore.store import ANY, NO_STREAM, EventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendTo",
    "CorruptionError",
    "EventStore",
    "InvalidId",
    "JobtrailError",
    "MemoryStore",
    "NewEvent",
    "RecordedEvent",
    "StorageError",
    "StoreClosed",
    "WrongExpectedVersion",
    "new",
    "new_event_id",
]
