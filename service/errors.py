"""The API's errors: one tree under JobtrailError, each with its API.md code and status.

One Starlette handler turns any of them into the error envelope (`service/app.py`).
"""

from __future__ import annotations

from typing import Any

from eventstore.errors import JobtrailError


class ApiError(JobtrailError):
    """An error answered to the client with its `code`, `status` and extra fields."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFound(ApiError):
    """No such route."""

    code = "NotFound"
    status = 404


class MethodNotAllowed(ApiError):
    """The route exists, the method does not."""

    code = "MethodNotAllowed"
    status = 405


class Unauthorized(ApiError):
    """A missing, invalid or expired bearer token."""

    code = "Unauthorized"
    status = 401


class PayloadTooLarge(ApiError):
    """A body over the configured limit."""

    code = "PayloadTooLarge"
    status = 413


class InvalidJson(ApiError):
    """A body that is not JSON."""

    code = "InvalidJson"
    status = 400


class InvalidHeader(ApiError):
    """A malformed header."""

    code = "InvalidHeader"
    status = 400


class MissingHeader(ApiError):
    """A required header is absent."""

    code = "MissingHeader"
    status = 400


class Forbidden(ApiError):
    """A header contradicts the token, or the role may not do this."""

    code = "Forbidden"
    status = 403


class ValidationFailed(ApiError):
    """A body or query parameter fails validation; the message names the field."""

    code = "ValidationError"
    status = 422


class JobNotFound(ApiError):
    """No job with this id that the caller may see."""

    code = "JobNotFound"
    status = 404


class Gone(ApiError):
    """The job was removed by retention (`jobtrail prune`)."""

    code = "Gone"
    status = 410


class NotRetryable(ApiError):
    """The job is not failed with retries left."""

    code = "NotRetryable"
    status = 409


class NotCancellable(ApiError):
    """The job completed or failed already."""

    code = "NotCancellable"
    status = 409


class IdempotencyKeyReused(ApiError):
    """The same Idempotency-Key came with another body."""

    code = "IdempotencyKeyReused"
    status = 422


class StorageUnavailable(ApiError):
    """The store cannot be written or read just now."""

    code = "StorageUnavailable"
    status = 503
