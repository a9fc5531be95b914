"""The error tree every layer raises from; the service maps `code`/`status` to API answers."""

from __future__ import annotations


class JobtrailError(Exception):
    """Base of every error jobtrail raises on purpose."""

    code = "InternalError"
    status = 500


class InvalidId(JobtrailError):
    """An id or stream name that is not of the documented form."""

    code = "InvalidId"
    status = 400


class WrongExpectedVersion(JobtrailError):
    """An append's expected version is not the stream's current version."""

    code = "Conflict"
    status = 409

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, expected {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class StorageError(JobtrailError):
    """The store could not be read or written; nothing half-written stays behind."""

    code = "StorageUnavailable"
    status = 503


class CorruptionError(StorageError):
    """A log holds damage followed by valid records: quarantined, never skipped."""

    code = "StorageUnavailable"
    status = 503


class StoreClosed(StorageError):
    """The store was closed, or stopped itself after a failed fsync."""


class OutcomeUnknown(StorageError):
    """An append a commit process held when it ended and that could not be sent again (a
    second child died with it too, none could be started, or the store closed): it may or
    may not be stored (reading the stream tells; a retry with the same event ids is safe)."""
