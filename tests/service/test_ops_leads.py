"""Leads and their documents on the ops routes (API.md section 1) through a real uvicorn."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventstore import streams
from eventstore.events import LeadEvaluated
from tests.service.conftest import Service
from tests.service.test_ops_api import LEAD, TIME, ops, put_lead

pytestmark = pytest.mark.anyio

PDF = b"%PDF-1.4\n" + b"pay stub " * 1000


async def upload(
    svc: Service,
    lead_id: str,
    content: Any = PDF,
    document_type: str | None = "pay_stub",
    content_type: str | None = "application/pdf",
    site: str = "site1",
) -> Any:
    headers = ops(svc, site)
    if content_type is not None:
        headers["Content-Type"] = content_type
    params = {"document_type": document_type} if document_type is not None else {}
    return await svc.client.post(
        f"/api/ops/leads/{lead_id}/documents", content=content, params=params, headers=headers
    )


async def test_put_creates_then_replaces_and_get_reads(service: Service) -> None:
    extra = {"source": "website", "notes": {"pets": ["cat"]}}
    r = await service.client.put(
        "/api/ops/leads/lead_1", json={**LEAD, **extra}, headers=ops(service)
    )
    assert r.status_code == 201 and r.headers["location"] == "/api/ops/leads/lead_1"
    body = r.json()
    assert body["success"] is True
    lead = body["data"]
    assert lead["id"] == "lead_1"
    for key, value in {**LEAD, **extra}.items():
        assert lead[key] == value, key
    assert lead["status"] == "new" and lead["ai_score"] is None and lead["ai_label"] is None
    assert lead["documents"] == []
    assert TIME.fullmatch(lead["created_at"]) and TIME.fullmatch(lead["updated_at"])
    got = await service.client.get("/api/ops/leads/lead_1", headers=ops(service))
    assert got.status_code == 200 and got.json() == body

    await service.store.append(
        streams.lead("site1", "lead_1"),
        [LeadEvaluated(job_id="j", evaluation_id="eval_1", score=82, label="A")],
        1,
    )
    assert (await upload(service, "lead_1")).status_code == 201
    replaced = await service.client.put(
        "/api/ops/leads/lead_1",
        json={**LEAD, "first_name": "Augusta", "status": "hacked", "ai_score": 1},
        headers=ops(service),
    )
    assert replaced.status_code == 200 and "location" not in replaced.headers
    lead = replaced.json()["data"]
    assert lead["first_name"] == "Augusta" and "source" not in lead, "fields are replaced"
    assert lead["status"] == "ai_evaluated" and lead["ai_score"] == 82 and lead["ai_label"] == "A"
    assert len(lead["documents"]) == 1, "documents are kept"
    assert lead["created_at"] == body["data"]["created_at"]
    (saved,) = [e for e in await service.store.read_stream(streams.lead("site1", "lead_1"))][-1:]
    assert "status" not in saved.event.fields  # type: ignore[union-attr]


async def test_leads_are_per_site(service: Service) -> None:
    await put_lead(service, "lead_1", first_name="One")
    await put_lead(service, "lead_1", site="site2", first_name="Two")
    mine = await service.client.get("/api/ops/leads/lead_1", headers=ops(service))
    theirs = await service.client.get("/api/ops/leads/lead_1", headers=ops(service, "site2"))
    assert mine.json()["data"]["first_name"] == "One"
    assert theirs.json()["data"]["first_name"] == "Two"
    missing = await service.client.get("/api/ops/leads/lead_2", headers=ops(service))
    assert missing.status_code == 404 and missing.json()["error"] == "LeadNotFound"
    await put_lead(service, "only_there", site="site2")
    hidden = await service.client.get("/api/ops/leads/only_there", headers=ops(service))
    assert hidden.status_code == 404 and hidden.json()["error"] == "LeadNotFound"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"first_name": None}, "first_name"),
        ({"first_name": ""}, "first_name"),
        ({"last_name": 7}, "last_name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": ["a@b.c"]}, "email"),
        ({"monthly_rent": -1}, "monthly_rent"),
        ({"monthly_rent": "1500"}, "monthly_rent"),
        ({"monthly_rent": True}, "monthly_rent"),
        ({"move_in_date": "2026-02-30"}, "move_in_date"),
        ({"move_in_date": "2026-2-3"}, "move_in_date"),
        ({"move_in_date": 20260301}, "move_in_date"),
        ({"phone": {"home": "1"}}, "phone"),
        ({"extra": 2**70}, "extra"),
    ],
)
async def test_bad_lead_fields_are_422_naming_them(
    service: Service, change: dict[str, Any], field: str
) -> None:
    await put_lead(service, "lead_1")
    before = service.files()
    body = {**LEAD, **change}
    if change.get("first_name", "") is None:
        del body["first_name"]
    r = await service.client.put("/api/ops/leads/lead_1", json=body, headers=ops(service))
    assert r.status_code == 422 and r.json()["error"] == "ValidationError", r.text
    assert field in r.json()["message"]
    assert service.files() == before


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"", 422, "ValidationError"),
        (b"[]", 422, "ValidationError"),
        (b'"lead"', 422, "ValidationError"),
        (b"{", 400, "InvalidJson"),
        (b"[" * 5000 + b"]" * 5000, 400, "InvalidJson"),
        (b'{"first_name": 1e400}', 400, "InvalidJson"),
    ],
)
async def test_bodies_that_are_no_lead(
    service: Service, content: bytes, status: int, code: str
) -> None:
    before = service.files()
    headers = {**ops(service), "Content-Type": "application/json"}
    r = await service.client.put("/api/ops/leads/lead_1", content=content, headers=headers)
    assert r.status_code == status and r.json()["error"] == code, r.text
    assert service.files() == before


async def test_upload_stores_a_blob_and_lists_the_document(service: Service) -> None:
    await put_lead(service, "lead_1")
    r = await upload(service, "lead_1", content_type="application/pdf; name=stub.pdf")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    doc = body["data"]
    assert set(doc) == {"id", "lead_id", "document_type", "mime_type", "size", "uploaded_at"}
    assert doc["id"].startswith("doc_") and len(doc["id"]) == 20
    assert streams.valid_id(doc["id"])
    assert doc["lead_id"] == "lead_1" and doc["document_type"] == "pay_stub"
    assert doc["mime_type"] == "application/pdf" and doc["size"] == len(PDF)
    assert TIME.fullmatch(doc["uploaded_at"])
    sha = hashlib.sha256(PDF).hexdigest()
    blob = service.data / "blobs" / sha[:2] / sha
    assert blob.read_bytes() == PDF
    lead = (await service.client.get("/api/ops/leads/lead_1", headers=ops(service))).json()
    assert lead["data"]["documents"] == [doc]

    again = await upload(service, "lead_1", document_type="other", content_type="text/plain")
    assert again.status_code == 201 and again.json()["data"]["id"] != doc["id"]
    assert [p.name for p in (service.data / "blobs").rglob(sha)] == [sha], "one blob per content"
    assert list((service.data / "blobs" / "tmp").iterdir()) == []

    url = f"/api/ops/leads/lead_1/documents/{doc['id']}"
    gone = await service.client.delete(url, headers=ops(service))
    assert gone.status_code == 200 and gone.json() == {"success": True}
    lead = (await service.client.get("/api/ops/leads/lead_1", headers=ops(service))).json()
    assert [d["id"] for d in lead["data"]["documents"]] == [again.json()["data"]["id"]]
    twice = await service.client.delete(url, headers=ops(service))
    assert twice.status_code == 404 and twice.json()["error"] == "DocumentNotFound"
    other_site = await service.client.delete(
        f"/api/ops/leads/lead_1/documents/{again.json()['data']['id']}",
        headers=ops(service, "site2"),
    )
    assert other_site.status_code == 404 and other_site.json()["error"] == "LeadNotFound"


async def test_every_accepted_type_is_stored(service: Service) -> None:
    await put_lead(service, "lead_1")
    kinds = ["pay_stub", "bank_statement", "employment_letter", "id_document", "tax_return"]
    mimes = ["application/pdf", "text/plain", "image/jpeg", "image/png", "image/webp"]
    for i, (kind, mime) in enumerate(zip(kinds, mimes, strict=True)):
        r = await upload(service, "lead_1", f"doc {i}".encode(), kind, mime.upper())
        assert r.status_code == 201 and r.json()["data"]["mime_type"] == mime


@pytest.mark.parametrize(
    ("document_type", "content_type", "field"),
    [
        (None, "application/pdf", "document_type"),
        ("payslip", "application/pdf", "document_type"),
        ("pay_stub", None, "Content-Type"),
        ("pay_stub", "application/zip", "Content-Type"),
        ("pay_stub", "image/gif", "Content-Type"),
    ],
)
async def test_bad_uploads_are_422_and_write_nothing(
    service: Service, document_type: str | None, content_type: str | None, field: str
) -> None:
    await put_lead(service, "lead_1")
    before = service.files()
    r = await upload(service, "lead_1", document_type=document_type, content_type=content_type)
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"
    assert field in r.json()["message"]
    assert service.files() == before


async def test_an_empty_document_is_422(service: Service) -> None:
    await put_lead(service, "lead_1")
    before = service.files()
    r = await upload(service, "lead_1", b"")

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    chunked = await upload(service, "lead_1", nothing())
    for answer in (r, chunked):
        assert answer.status_code == 422 and "empty" in answer.json()["message"]
    assert service.files() == before


async def test_upload_to_a_missing_lead_is_404_and_writes_nothing(service: Service) -> None:
    before = service.files()
    r = await upload(service, "nobody")
    assert r.status_code == 404 and r.json()["error"] == "LeadNotFound"
    assert service.files() == before


async def test_a_document_over_the_limit_is_413_and_never_written(service: Service) -> None:
    await put_lead(service, "lead_1")
    before = service.files()
    limit = service.settings.max_document_bytes
    big = b"x" * (limit + 1)
    r = await upload(service, "lead_1", big)
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    assert service.files() == before

    async def chunks() -> AsyncIterator[bytes]:
        piece = b"y" * (1024 * 1024)
        for _ in range(limit // len(piece) + 1):
            yield piece

    r = await upload(service, "lead_1", chunks())
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    assert service.files() == before
    assert list((service.data / "blobs" / "tmp").iterdir()) == []
    wrong_too = await upload(service, "lead_1", chunks(), document_type="nonsense")
    assert wrong_too.status_code == 413, "the size is checked before the query (413 < 422)"
    missing_too = await upload(service, "nobody", chunks())
    assert missing_too.status_code == 413, "and before the lead's existence (413 < 404)"
    exact = await upload(service, "lead_1", b"z" * limit)
    assert exact.status_code == 201 and exact.json()["data"]["size"] == limit
