"""`/openapi.json`: OpenAPI 3.1 of every route, schemas generated from `service/schemas.py`.

The route table below is the one place that describes each route for clients; the
schemas are msgspec's JSON Schema of the same types the tests check answers against.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service import schemas
from service.commands import JobCreate

_REF = "#/components/schemas/{name}"
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_LEAD_ID = {
    "name": "lead_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_SITE = {
    "name": "X-Site-Id",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_USER = {
    "name": "X-User-Id",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`wait=N`: hold the answer until the job changes, N <= 30 s.",
    "schema": {"type": "string"},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-255 printable ASCII; a repeat gets the first answer (24 h).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

_ERRORS = {
    "400": "Malformed id, header or JSON (InvalidId, MissingHeader, InvalidHeader, InvalidJson)",
    "401": "Missing, invalid or expired token (Unauthorized)",
    "403": "A header contradicts the token, or the role may not (Forbidden)",
    "410": "Removed by retention (Gone)",
    "413": "Body over the limit (PayloadTooLarge)",
    "422": "A field fails validation; the message names it (ValidationError)",
    "503": "Storage unavailable; nothing was written (StorageUnavailable)",
}

# (method, path, summary, parameters, request type, {status: (description, type)})
_ROUTES: list[
    tuple[str, str, str, list[dict[str, Any]], type | None, dict[str, tuple[str, type | None]]]
] = [
    (
        "post",
        "/api/jobs",
        "Create a job",
        [_IDEMPOTENCY],
        JobCreate,
        {
            "202": ("Accepted; poll `poll_url` or stream `events_url`", schemas.JobAccepted),
            "404": ("Lead not found (ai_evaluation)", schemas.Error),
            "409": ("A job for the lead is pending, or it was evaluated", schemas.Error),
            "429": ("Monthly quota reached (QuotaExceeded)", schemas.Error),
        },
    ),
    (
        "get",
        "/api/jobs",
        "List jobs, newest first",
        [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
            for n in ("status", "type", "limit", "cursor")
        ],
        None,
        {"200": ("A page of jobs", schemas.JobPage)},
    ),
    (
        "get",
        "/api/jobs/{job_id}",
        "Poll a job",
        [_JOB_ID, _PREFER],
        None,
        {
            "200": ("The job (with Retry-After while pending or running)", schemas.Job),
            "404": ("No such job for the caller (JobNotFound)", schemas.Error),
        },
    ),
    (
        "post",
        "/api/jobs/{job_id}/retry",
        "Retry a failed job (a new round)",
        [_JOB_ID],
        None,
        {
            "202": ("Queued again", schemas.Job),
            "404": ("No such job (JobNotFound)", schemas.Error),
            "409": ("Not failed with attempts left (NotRetryable)", schemas.Error),
        },
    ),
    (
        "post",
        "/api/jobs/{job_id}/cancel",
        "Cancel a job",
        [_JOB_ID],
        None,
        {
            "202": ("Cancelled, or cancel_requested while its handler stops", schemas.Job),
            "404": ("No such job (JobNotFound)", schemas.Error),
            "409": ("Completed or failed already (NotCancellable)", schemas.Error),
        },
    ),
    (
        "get",
        "/api/jobs/{job_id}/events",
        "A job's events: JSON history, or SSE with Accept: text/event-stream",
        [_JOB_ID],
        None,
        {
            "200": ("The history (JSON) or the stream (SSE)", schemas.EventList),
            "204": ("Reconnect after the final event: stop", None),
            "404": ("No such job (JobNotFound)", schemas.Error),
        },
    ),
    (
        "get",
        "/api/events",
        "The site's (admin) or the user's job events, as SSE",
        [],
        None,
        {"200": ("text/event-stream; id is the global position", None)},
    ),
    (
        "get",
        "/api/job-status/{job_id}",
        "A job in the older store's form",
        [_JOB_ID],
        None,
        {
            "200": ("The job", schemas.LegacyJob),
            "400": ("Invalid job id", schemas.LegacyError),
            "401": ("Unauthorized", schemas.LegacyError),
            "404": ("Job not found", schemas.LegacyError),
        },
    ),
    (
        "get",
        "/api/usage",
        "This month's (or `month`'s) evaluation usage",
        [{"name": "month", "in": "query", "required": False, "schema": {"type": "string"}}],
        None,
        {"200": ("Usage", schemas.UsageAnswer)},
    ),
    (
        "put",
        "/api/ops/sites/{site_id}/quota",
        "Set a site's monthly limit and tier (admin)",
        [{"name": "site_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        schemas.QuotaChange,
        {"200": ("This month's usage", schemas.UsageAnswer)},
    ),
    (
        "put",
        "/api/ops/leads/{lead_id}",
        "Create or replace a lead",
        [_LEAD_ID, _SITE],
        schemas.LeadBody,
        {"200": ("Replaced", schemas.Success), "201": ("Created", schemas.Success)},
    ),
    (
        "get",
        "/api/ops/leads/{lead_id}",
        "A lead with its documents",
        [_LEAD_ID, _SITE],
        None,
        {"200": ("The lead", schemas.Success), "404": ("LeadNotFound", schemas.Error)},
    ),
    (
        "post",
        "/api/ops/leads/{lead_id}/documents",
        "Upload a document (raw body)",
        [
            _LEAD_ID,
            _SITE,
            {
                "name": "document_type",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
            },
        ],
        None,
        {"201": ("Stored", schemas.Success), "404": ("LeadNotFound", schemas.Error)},
    ),
    (
        "delete",
        "/api/ops/leads/{lead_id}/documents/{document_id}",
        "Remove a document",
        [
            _LEAD_ID,
            _SITE,
            {"name": "document_id", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        None,
        {"200": ("Removed", schemas.Success), "404": ("Not found", schemas.Error)},
    ),
    (
        "post",
        "/api/ops/leads/{lead_id}/ai-evaluation",
        "Create an evaluation job",
        [_LEAD_ID, _SITE, _USER, _IDEMPOTENCY],
        schemas.EvaluationRequest,
        {
            "201": ("Accepted", schemas.Success),
            "404": ("LeadNotFound", schemas.Error),
            "409": ("JobAlreadyPending or AlreadyEvaluated", schemas.Error),
            "429": ("QuotaExceeded", schemas.Error),
        },
    ),
    (
        "get",
        "/api/ops/ai-evaluation-jobs/{job_id}",
        "Poll an evaluation job",
        [_JOB_ID, _SITE, _PREFER],
        None,
        {
            "200": ("Final", schemas.Success),
            "202": ("Pending or processing", schemas.Success),
            "404": ("JobNotFound", schemas.Error),
        },
    ),
    (
        "post",
        "/api/ops/ai-evaluation-jobs/{job_id}/retry",
        "Retry an evaluation job",
        [_JOB_ID, _SITE],
        None,
        {"202": ("Queued again", schemas.Success), "409": ("NotRetryable", schemas.Error)},
    ),
    (
        "post",
        "/api/ops/ai-evaluation-jobs/{job_id}/cancel",
        "Cancel an evaluation job",
        [_JOB_ID, _SITE],
        None,
        {
            "202": ("Cancelled or cancel_requested", schemas.Success),
            "409": ("NotCancellable", schemas.Error),
        },
    ),
    ("get", "/healthz", "The process is up", [], None, {"200": ("Up", schemas.Status)}),
    (
        "get",
        "/readyz",
        "The store answers",
        [],
        None,
        {"200": ("Ready", schemas.Status), "503": ("Not ready", schemas.Error)},
    ),
    ("get", "/metrics", "Prometheus metrics (text format)", [], None, {"200": ("Metrics", None)}),
    ("get", "/openapi.json", "This document", [], None, {"200": ("OpenAPI 3.1", None)}),
]
_PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    types: list[Any] = []
    for *_, request, responses in _ROUTES:
        if request is not None:
            types.append(request)
        types.extend(t for _, t in responses.values() if t is not None)
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, request, responses in _ROUTES:
        op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": {}}
        if path not in _PUBLIC:
            op["security"] = [{"bearer": []}]
            for status, text in _ERRORS.items():
                op["responses"][status] = _answer(text, ref[schemas.Error])
        if request is not None:
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": ref[request]}},
            }
        for status, (text, type_) in responses.items():
            op["responses"][status] = _answer(text, ref[type_] if type_ is not None else None)
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobtrail",
            "version": "0.1.0",
            "description": "Event-sourced jobs: create, poll, stream, audit.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _answer(text: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": text}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer
