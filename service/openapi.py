"""`/openapi.json`: OpenAPI 3.1 of every route, schemas generated from `service/schemas.py`.

The route table below is the one place that describes each route for clients; the
schemas are msgspec's JSON Schema of the same types the tests check answers against.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service import schemas

_REF = "#/components/schemas/{name}"
_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_JOB_ID = _path("job_id", {"type": "string", "format": "uuid"})
_LEAD_ID = _path("lead_id", {"type": "string", "pattern": _ID_PATTERN})
_DOCUMENT_ID = _path("document_id", {"type": "string", "pattern": _ID_PATTERN})
_SITE_ID = _path("site_id", {"type": "string", "pattern": _ID_PATTERN})
_SITE = {
    "name": "X-Site-Id",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": _ID_PATTERN},
}
_USER = {
    "name": "X-User-Id",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": _ID_PATTERN},
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
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e][\\x20-\\x7e]{0,254}$"},
}
_MONTH = {
    "type": "string",
    "pattern": "^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(0[1-9]|1[0-2])$",
}
_DOCUMENT_TYPES = [
    "pay_stub",
    "bank_statement",
    "employment_letter",
    "id_document",
    "tax_return",
    "other",
]
_MIME_TYPES = ["application/pdf", "text/plain", "image/jpeg", "image/png", "image/webp"]
_SSE = "text/event-stream"
_EVENT_STREAM = {
    "type": "string",
    "description": "Server-Sent Events: `id:`, `event:` (the event's type), `data:` (its JSON).",
}
_STREAM = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "SSE: resume after this id (a whole number; anything else is ignored).",
        "schema": {"type": "string"},
    },
    _query("access_token", {"type": "string"}),  # EventSource cannot send headers
]

_ERRORS = {
    "400": "Malformed id, header or JSON (InvalidId, MissingHeader, InvalidHeader, InvalidJson)",
    "401": "Missing, invalid or expired token (Unauthorized)",
    "403": "A header contradicts the token, or the role may not (Forbidden)",
    "503": "Storage unavailable; nothing was written (StorageUnavailable)",
}
_GONE = {"410": "Removed by retention (Gone)"}
_TOO_LARGE = {"413": "Body over the limit (PayloadTooLarge)"}
_INVALID = {"422": "A field fails validation; the message names it (ValidationError)"}
_LEGACY_ERRORS = {
    "400": "Invalid job_id format (must be UUID)",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "Job not found (also a pruned job)",
    "503": "Service unavailable",
}

Answers = dict[str, tuple[str, type | None]]
# (method, path, summary, parameters, request type, {status: (description, type)})
_ROUTES: list[tuple[str, str, str, list[dict[str, Any]], type | None, Answers]] = [
    (
        "post",
        "/api/jobs",
        "Create a job",
        [_IDEMPOTENCY],
        schemas.JobRequest,
        {
            "202": ("Accepted; poll `poll_url` or stream `events_url`", schemas.JobAccepted),
            "404": ("Lead not found (ai_evaluation: LeadNotFound)", schemas.Error),
            "409": ("A job for the lead is pending, or it was evaluated", schemas.Error),
            "429": ("Monthly quota reached (QuotaExceeded)", schemas.Error),
        },
    ),
    (
        "get",
        "/api/jobs",
        "List jobs, newest first",
        [
            _query("status", {"type": "string"}),
            _query("type", {"type": "string"}),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
            _query("cursor", {"type": "string"}),
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
        [_JOB_ID, *_STREAM],
        None,
        {
            "200": (
                "The history (JSON) or the stream (SSE; `id:` is the version)",
                schemas.EventList,
            ),
            "204": ("Reconnect after the final event: stop", None),
            "404": ("No such job (JobNotFound)", schemas.Error),
        },
    ),
    (
        "get",
        "/api/events",
        "The site's (admin) or the user's job events, as SSE",
        _STREAM,
        None,
        {"200": ("The stream; `id:` is the global position", None)},
    ),
    (
        "get",
        "/api/job-status/{job_id}",
        "A job in the older store's form",
        [_JOB_ID],
        None,
        {"200": ("The job", schemas.LegacyJob)},
    ),
    (
        "get",
        "/api/usage",
        "This month's (or `month`'s) evaluation usage",
        [_query("month", _MONTH)],
        None,
        {"200": ("Usage", schemas.UsageAnswer)},
    ),
    (
        "put",
        "/api/ops/sites/{site_id}/quota",
        "Set a site's monthly limit and tier (admin of that site)",
        [_SITE_ID, _SITE],
        schemas.QuotaChange,
        {"200": ("This month's usage", schemas.UsageAnswer)},
    ),
    (
        "put",
        "/api/ops/leads/{lead_id}",
        "Create or replace a lead",
        [_LEAD_ID, _SITE],
        schemas.LeadBody,
        {"200": ("Replaced", schemas.LeadAnswer), "201": ("Created", schemas.LeadAnswer)},
    ),
    (
        "get",
        "/api/ops/leads/{lead_id}",
        "A lead with its documents",
        [_LEAD_ID, _SITE],
        None,
        {"200": ("The lead", schemas.LeadAnswer), "404": ("LeadNotFound", schemas.Error)},
    ),
    (
        "post",
        "/api/ops/leads/{lead_id}/documents",
        "Upload a document (the raw body, with its Content-Type)",
        [
            _LEAD_ID,
            _SITE,
            _query("document_type", {"type": "string", "enum": _DOCUMENT_TYPES}, True),
        ],
        bytes,
        {"201": ("Stored", schemas.DocumentAnswer), "404": ("LeadNotFound", schemas.Error)},
    ),
    (
        "delete",
        "/api/ops/leads/{lead_id}/documents/{document_id}",
        "Remove a document",
        [_LEAD_ID, _SITE, _DOCUMENT_ID],
        None,
        {
            "200": ("Removed", schemas.Done),
            "404": ("LeadNotFound or DocumentNotFound", schemas.Error),
        },
    ),
    (
        "post",
        "/api/ops/leads/{lead_id}/ai-evaluation",
        "Create an evaluation job",
        [_LEAD_ID, _SITE, _USER, _IDEMPOTENCY],
        schemas.EvaluationRequest,
        {
            "201": ("Accepted", schemas.EvaluationAccepted),
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
            "200": ("Final", schemas.EvaluationJobAnswer),
            "202": ("Pending or processing (with Retry-After)", schemas.EvaluationJobAnswer),
            "404": ("JobNotFound", schemas.Error),
        },
    ),
    (
        "post",
        "/api/ops/ai-evaluation-jobs/{job_id}/retry",
        "Retry an evaluation job",
        [_JOB_ID, _SITE],
        None,
        {
            "202": ("Queued again", schemas.EvaluationJobAnswer),
            "404": ("JobNotFound", schemas.Error),
            "409": ("NotRetryable or JobAlreadyPending", schemas.Error),
        },
    ),
    (
        "post",
        "/api/ops/ai-evaluation-jobs/{job_id}/cancel",
        "Cancel an evaluation job",
        [_JOB_ID, _SITE],
        None,
        {
            "202": ("Cancelled or cancel_requested", schemas.EvaluationJobAnswer),
            "404": ("JobNotFound", schemas.Error),
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
_LEGACY = "/api/job-status/{job_id}"
_BODY_REQUIRED = {schemas.JobRequest, schemas.LeadBody, schemas.QuotaChange, bytes}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    types: list[Any] = [schemas.Error, schemas.LegacyError]
    for *_, request, responses in _ROUTES:
        if request is not None and request is not bytes:
            types.append(request)
        types.extend(t for _, t in responses.values() if t is not None)
    types = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, request, responses in _ROUTES:
        op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": {}}
        if path not in _PUBLIC:
            op["security"] = [{"bearer": []}]
            for status, text in _errors(path, request, params).items():
                error = schemas.LegacyError if path == _LEGACY else schemas.Error
                op["responses"][status] = _answer(text, ref[error])
        if request is bytes:
            binary = {"schema": {"type": "string", "format": "binary"}}
            op["requestBody"] = {"required": True, "content": dict.fromkeys(_MIME_TYPES, binary)}
        elif request is not None:
            op["requestBody"] = {
                "required": request in _BODY_REQUIRED,
                "content": {"application/json": {"schema": ref[request]}},
            }
        for status, (text, type_) in responses.items():
            op["responses"][status] = _answer(text, ref[type_] if type_ is not None else None)
        if path.endswith("/events"):  # the same route streams with Accept: text/event-stream
            content = op["responses"]["200"].setdefault("content", {})
            content[_SSE] = {"schema": {"$ref": _REF.format(name="EventStream")}}
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
            "schemas": {**components, "EventStream": _EVENT_STREAM},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _errors(path: str, request: type | None, params: list[dict[str, Any]]) -> dict[str, str]:
    """The error answers a route can give besides its own: by what it takes."""
    if path == _LEGACY:
        return _LEGACY_ERRORS
    errors = dict(_ERRORS)
    if "{job_id}" in path:
        errors.update(_GONE)
    if request is not None:
        errors.update(_TOO_LARGE)
    checked = [p for p in params if p["in"] == "query" and p["name"] != "access_token"]
    if request is not None or checked:  # a body or query parameter that fails validation
        errors.update(_INVALID)
    return dict(sorted(errors.items()))


def _answer(text: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": text}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer
