"""The API's request and response shapes as msgspec types: the OpenAPI schemas come from here."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]


class Job(msgspec.Struct, forbid_unknown_fields=True):
    """A job as `GET /api/jobs/{job_id}` shows it; fields without a value are null."""

    job_id: str
    job_type: str
    status: JobStatus
    user_id: str
    metadata: dict[str, Any]
    result: Any
    error: str | None
    error_code: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    progress: int
    progress_message: str
    retry_count: int
    max_retries: int
    next_attempt_at: str | None
    priority: int
    can_retry: bool
    cancel_requested: bool


class JobAccepted(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["accepted"]
    job_id: str
    message: str
    poll_url: str
    events_url: str


class JobPage(msgspec.Struct, forbid_unknown_fields=True):
    jobs: list[Job]
    count: int
    next_cursor: str | None


class LegacyJob(msgspec.Struct, forbid_unknown_fields=True):
    """A job in the older file-backed store's form."""

    job_id: str
    status: Literal["queued", "running", "completed", "failed"]
    created_at: str
    updated_at: str
    result: Any
    error_message: str | None
    progress: int


class UsageAnswer(msgspec.Struct, forbid_unknown_fields=True):
    used: int
    limit: int
    remaining: int
    month: str
    tier: str


class QuotaChange(msgspec.Struct):
    limit: int
    tier: str


class Event(msgspec.Struct, forbid_unknown_fields=True):
    """One event of a job's history; `version` counts from 1 in the job's stream."""

    id: str
    job_id: str
    version: int
    position: int
    type: str
    recorded_at: str
    data: dict[str, Any]


class EventList(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Event]


class Error(msgspec.Struct, forbid_unknown_fields=False):
    """The error envelope; some errors add fields (`job_id`, `usage`, ...)."""

    success: Literal[False]
    error: str
    message: str
    timestamp: str
    path: str


class LegacyError(msgspec.Struct, forbid_unknown_fields=True):
    error: str
    timestamp: str
    path: str


class Status(msgspec.Struct, forbid_unknown_fields=False):
    status: str


class Success(msgspec.Struct, forbid_unknown_fields=False):
    success: Literal[True]
    data: dict[str, Any] = {}


class LeadBody(msgspec.Struct, forbid_unknown_fields=False):
    first_name: str
    last_name: str
    email: str
    phone: str | None = None
    move_in_date: str | None = None
    monthly_rent: float | None = None


class EvaluationRequest(msgspec.Struct):
    force_refresh: bool = False
    model_version: str = "auto"
