"""The API's request and response shapes as msgspec types: the OpenAPI schemas come from here."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
DocumentType = Literal[
    "pay_stub", "bank_statement", "employment_letter", "id_document", "tax_return", "other"
]
MimeType = Literal["application/pdf", "text/plain", "image/jpeg", "image/png", "image/webp"]
Name = Annotated[str, Meta(min_length=1, max_length=200)]


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


class QuotaChange(msgspec.Struct, forbid_unknown_fields=False):
    limit: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    tier: Annotated[str, Meta(min_length=1, max_length=64)]


class JobRequest(msgspec.Struct, forbid_unknown_fields=False):
    """The body of `POST /api/jobs`; `type` is a built-in type or one of `--handlers`."""

    type: str
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    priority: Annotated[int, Meta(ge=-10, le=10)] = 0
    max_retries: Annotated[int, Meta(ge=1, le=10)] = 3


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


class Done(msgspec.Struct, forbid_unknown_fields=True):
    success: Literal[True]


class LeadBody(msgspec.Struct, forbid_unknown_fields=False):
    """A lead's own fields; any other field is kept as it came."""

    first_name: Name
    last_name: Name
    email: Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    phone: Annotated[str, Meta(max_length=64)] | None = None
    move_in_date: date | None = None
    monthly_rent: Annotated[float, Meta(ge=0)] | None = None


class Document(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    lead_id: str
    document_type: DocumentType
    mime_type: MimeType
    size: int
    uploaded_at: str


class Lead(msgspec.Struct, forbid_unknown_fields=False):
    """A lead's own fields as saved (other fields too), and what the service keeps."""

    id: str
    first_name: str
    last_name: str
    email: str
    status: str
    ai_score: int | None
    ai_label: str | None
    documents: list[Document]
    created_at: str
    updated_at: str


class LeadAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: Literal[True]
    data: Lead


class DocumentAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: Literal[True]
    data: Document


class EvaluationAcceptedData(msgspec.Struct, forbid_unknown_fields=True):
    job_id: str
    lead_id: str
    status: Literal["pending"]
    requested_at: str
    estimated_completion: str


class MonthUsage(msgspec.Struct, forbid_unknown_fields=True):
    remaining: int
    limit: int
    month: str


class EvaluationAccepted(msgspec.Struct, forbid_unknown_fields=True):
    """The 201 of `POST /api/ops/leads/{lead_id}/ai-evaluation`."""

    success: Literal[True]
    data: EvaluationAcceptedData
    usage: MonthUsage


class Evaluation(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    score: Annotated[int, Meta(ge=0, le=100)] | None
    label: Literal["A", "B", "C", "D"] | None
    recommendation: Literal["approve", "review", "reject"] | None
    summary: str | None
    risk_flags: list[str]
    fraud_signals: list[str]
    evaluated_at: str | None
    model_version: str | None


class EvaluationJob(msgspec.Struct, forbid_unknown_fields=True):
    """An evaluation job in its state's form: the fields after `requested_at` appear in the
    states API.md names them for."""

    job_id: str
    lead_id: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    requested_at: str
    started_at: str | None = None
    progress: int | None = None
    progress_message: str | None = None
    duration_ms: int | None = None
    cancel_requested: bool | None = None
    completed_at: str | None = None
    evaluation: Evaluation | None = None
    error_code: str | None = None
    error_message: str | None = None
    can_retry: bool | None = None
    retry_count: int | None = None
    max_retries: int | None = None
    next_attempt_at: str | None = None
    cancelled_at: str | None = None


class EvaluationJobAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: Literal[True]
    data: EvaluationJob


class EvaluationRequest(msgspec.Struct):
    force_refresh: bool = False
    model_version: str = "auto"
