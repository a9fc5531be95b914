"""Leads and their documents (API.md section 1): save, read, upload, remove.

Every command folds the lead's own stream, decides, and appends with the version it read,
re-reading on a conflict. Fields the service owns (`status`, `ai_score`, `documents`...)
are dropped from a saved body, so a client may PUT back what it got from GET.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventstore import EventStore, WrongExpectedVersion, streams
from eventstore.events import DocumentAdded, DocumentRemoved, LeadSaved
from projections.leads import LeadDocument, LeadView, load_lead
from service.auth import Principal
from service.blobs import EMPTY, Blob
from service.errors import (
    ApiError,
    PayloadTooLarge,
    StorageUnavailable,
    ValidationFailed,
)
from service.http import (
    check_identity_headers,
    convert,
    json_response,
    principal_of,
    read_body,
    timestamp,
)
from service.ops_common import (
    LeadNotFound,
    app_state,
    existing_lead,
    lead_id_param,
    ops_state,
    parse_body,
    require_ops_headers,
)

CONFLICT_RETRIES: Final = 20
DOCUMENT_TYPES: Final = frozenset(
    {"pay_stub", "bank_statement", "employment_letter", "id_document", "tax_return", "other"}
)
MIME_TYPES: Final = frozenset(
    {"application/pdf", "text/plain", "image/jpeg", "image/png", "image/webp"}
)
SERVICE_FIELDS: Final = frozenset(
    {"id", "lead_id", "site_id", "status", "ai_score", "ai_label", "documents"}
    | {"created_at", "updated_at"}
)
MAX_DEPTH: Final = 16
_INT64: Final = 2**63

Name = Annotated[str, Meta(min_length=1, max_length=200)]


class LeadBody(msgspec.Struct, forbid_unknown_fields=False):
    """The documented fields of a lead; any other field is kept as it came."""

    first_name: Name
    last_name: Name
    email: Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    phone: Annotated[str, Meta(max_length=64)] | None = None
    move_in_date: date | None = None
    monthly_rent: Annotated[float, Meta(ge=0)] | None = None


class DocumentNotFound(ApiError):
    """No such document on the lead."""

    code = "DocumentNotFound"
    status = 404


def lead_fields(value: Any) -> dict[str, Any]:
    """The fields to store (as sent, minus the service's own); 422 naming the bad field."""
    if value is None:
        raise ValidationFailed("body: a JSON object with the lead's fields is required")
    if not isinstance(value, dict):
        raise ValidationFailed(f"body: Expected `object`, got `{_json_type(value)}`")
    convert(value, LeadBody)
    for key, item in value.items():
        if not 1 <= len(key) <= 100:
            raise ValidationFailed("body: field names are 1-100 characters")
        _check_value(item, key, 0)
    return {k: v for k, v in value.items() if k not in SERVICE_FIELDS}


def _check_value(value: Any, where: str, depth: int) -> None:
    """Extra fields may hold any JSON the store can keep: bounded depth, 64-bit integers."""
    if depth > MAX_DEPTH:
        raise ValidationFailed(f"{where}: nested more than {MAX_DEPTH} levels")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise ValidationFailed(f"{where}: integer out of range")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)


def _json_type(value: Any) -> str:
    return "array" if isinstance(value, list) else type(value).__name__


def document_json(lead_id: str, doc: LeadDocument) -> dict[str, Any]:
    return {
        "id": doc.id,
        "lead_id": lead_id,
        "document_type": doc.document_type,
        "mime_type": doc.mime_type,
        "size": doc.size,
        "uploaded_at": timestamp(doc.uploaded_at),
    }


def lead_json(view: LeadView) -> dict[str, Any]:
    """The lead's own fields plus what the service keeps: status, score, documents, times."""
    return {
        "id": view.lead_id,
        **view.fields,
        "status": view.status,
        "ai_score": view.ai_score,
        "ai_label": view.ai_label,
        "documents": [document_json(view.lead_id, d) for d in view.documents],
        "created_at": timestamp(view.created_at),
        "updated_at": timestamp(view.updated_at),
    }


async def save_lead(
    store: EventStore, site_id: str, lead_id: str, fields: dict[str, Any]
) -> tuple[LeadView, bool]:
    """Create or replace the lead's own fields; the view and whether it was created."""
    stream = streams.lead(site_id, lead_id)
    for _ in range(CONFLICT_RETRIES):
        version = await store.stream_version(stream)
        try:
            await store.append(stream, [LeadSaved(fields=fields)], version)
        except WrongExpectedVersion:
            continue
        view = await load_lead(store, site_id, lead_id)
        assert view is not None
        return view, version == 0
    raise StorageUnavailable("The lead kept changing; try again.")


async def put_lead(request: Request) -> Response:
    state = app_state(request)
    who = principal_of(request)
    raw = await read_body(request, state.settings.max_json_bytes)
    lead_id = lead_id_param(request)
    require_ops_headers(request)
    value = parse_body(raw)
    check_identity_headers(request, who)
    fields = lead_fields(value)
    view, created = await save_lead(state.store, who.site_id, lead_id, fields)
    headers = {"Location": f"/api/ops/leads/{lead_id}"} if created else {}
    return json_response(
        {"success": True, "data": lead_json(view)}, 201 if created else 200, headers
    )


async def get_lead(request: Request) -> Response:
    state = app_state(request)
    who = principal_of(request)
    lead_id = lead_id_param(request)
    require_ops_headers(request)
    check_identity_headers(request, who)
    view = await existing_lead(state.store, who.site_id, lead_id)
    return json_response({"success": True, "data": lead_json(view)})


def _upload_target(request: Request, who: Principal) -> tuple[str, str, str]:
    """(lead id, document type, mime type), checked in the API's order: 400, 403, 422."""
    lead_id = lead_id_param(request)
    require_ops_headers(request)
    check_identity_headers(request, who)
    document_type = request.query_params.get("document_type")
    if document_type not in DOCUMENT_TYPES:
        raise ValidationFailed(
            f"document_type: one of {', '.join(sorted(DOCUMENT_TYPES))} is required"
        )
    mime = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if mime not in MIME_TYPES:
        raise ValidationFailed(f"Content-Type: one of {', '.join(sorted(MIME_TYPES))}")
    if request.headers.get("content-length") == "0":
        raise ValidationFailed(EMPTY)
    return lead_id, document_type, mime


async def upload_document(request: Request) -> Response:
    """Stream the body into the blob store, then record it on the lead.

    A request refused for any reason after authentication still has its body counted, so
    that a body over the limit is 413 before any 400/403/422/404, as the check order says;
    such a body is read and dropped, never written.
    """
    state, ops = app_state(request), ops_state(request)
    who = principal_of(request)
    limit = state.settings.max_document_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The document is larger than {limit} bytes.")
    try:
        lead_id, document_type, mime = _upload_target(request, who)
        await existing_lead(state.store, who.site_id, lead_id)
    except ApiError as refused:
        size = await _drain(request, limit)
        if size == 0 and isinstance(refused, LeadNotFound):
            raise ValidationFailed(EMPTY) from None  # 422 comes before 404
        raise refused from None
    blob = await ops.blobs.write(request.stream(), limit)  # refuses an empty body (422)
    doc = await add_document(
        state.store, who.site_id, lead_id, document_type, mime, blob, state.clock()
    )
    return json_response({"success": True, "data": document_json(lead_id, doc)}, 201)


async def _drain(request: Request, limit: int) -> int:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The document is larger than {limit} bytes.")
    return size


async def add_document(
    store: EventStore,
    site_id: str,
    lead_id: str,
    document_type: str,
    mime: str,
    blob: Blob,
    uploaded_at: datetime,
) -> LeadDocument:
    """Append `DocumentAdded` for a durable blob; a fresh id `doc_` + 16 hex digits."""
    event = DocumentAdded(
        document_id=f"doc_{secrets.token_hex(8)}",
        document_type=document_type,
        mime_type=mime,
        size=blob.size,
        sha256=blob.sha256,
        uploaded_at=uploaded_at,
    )
    for _ in range(CONFLICT_RETRIES):
        lead = await existing_lead(store, site_id, lead_id)
        try:
            await store.append(streams.lead(site_id, lead_id), [event], lead.version)
        except WrongExpectedVersion:
            continue
        return LeadDocument(
            id=event.document_id,
            document_type=document_type,
            mime_type=mime,
            size=blob.size,
            sha256=blob.sha256,
            uploaded_at=event.uploaded_at,
        )
    raise StorageUnavailable("The lead kept changing; try again.")


async def delete_document(request: Request) -> Response:
    state = app_state(request)
    who = principal_of(request)
    lead_id = lead_id_param(request)
    document_id = streams.valid_id(request.path_params["document_id"], "document id")
    require_ops_headers(request)
    check_identity_headers(request, who)
    stream = streams.lead(who.site_id, lead_id)
    for _ in range(CONFLICT_RETRIES):
        lead = await existing_lead(state.store, who.site_id, lead_id)
        if lead.document(document_id) is None:
            raise DocumentNotFound("Document not found.")
        try:
            await state.store.append(
                stream, [DocumentRemoved(document_id=document_id)], lead.version
            )
        except WrongExpectedVersion:
            continue
        return json_response({"success": True})
    raise StorageUnavailable("The lead kept changing; try again.")


routes = [
    Route("/api/ops/leads/{lead_id}", put_lead, methods=["PUT"]),
    Route("/api/ops/leads/{lead_id}", get_lead, methods=["GET"]),
    Route("/api/ops/leads/{lead_id}/documents", upload_document, methods=["POST"]),
    Route("/api/ops/leads/{lead_id}/documents/{document_id}", delete_document, methods=["DELETE"]),
]
