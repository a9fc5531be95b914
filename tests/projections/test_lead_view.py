"""Leads: saved fields, documents, evaluations, and the latest evaluation job."""

from __future__ import annotations

from datetime import timedelta

from eventstore.events import (
    AnyEvent,
    DocumentAdded,
    DocumentRemoved,
    LeadEvaluated,
    LeadSaved,
)
from eventstore.records import RecordedEvent
from projections import INITIAL_STATUS, LeadTable, LeadView, apply_lead

from .builders import T0, history, job_id, job_stream, requested

STREAM = "lead:site_a:lead_1"


def doc(document_id: str, size: int = 10) -> DocumentAdded:
    return DocumentAdded(
        document_id=document_id,
        document_type="pay_stub",
        mime_type="application/pdf",
        size=size,
        sha256="ab" * 32,
        uploaded_at=T0,
    )


def saved(**fields: object) -> LeadSaved:
    return LeadSaved(fields={"first_name": "Ada", "last_name": "L", "email": "a@x.io", **fields})


def evaluated(n: int, score: int = 82, label: str = "A") -> LeadEvaluated:
    return LeadEvaluated(job_id=job_id(n), evaluation_id=f"eval_{n}", score=score, label=label)


def lead(events: list[AnyEvent], stream: str = STREAM) -> LeadView | None:
    view: LeadView | None = None
    for r in history(stream, events):
        view = apply_lead(view, r)
    return view


def test_a_saved_lead_starts_new() -> None:
    view = lead([saved()])
    assert view is not None
    assert (view.site_id, view.lead_id, view.status, view.ai_score, view.ai_label) == (
        "site_a",
        "lead_1",
        INITIAL_STATUS,
        None,
        None,
    )
    assert INITIAL_STATUS == "new"
    assert view.fields["email"] == "a@x.io" and view.documents == ()
    assert (view.version, view.created_at) == (1, T0 + timedelta(seconds=1))


def test_saving_again_replaces_the_fields_and_keeps_the_rest() -> None:
    view = lead([saved(phone="1"), doc("d1"), evaluated(7), saved(first_name="Bo")])
    assert view is not None
    assert view.fields == {"first_name": "Bo", "last_name": "L", "email": "a@x.io"}
    assert (view.status, view.ai_score, view.ai_label) == ("ai_evaluated", 82, "A")
    assert [d.id for d in view.documents] == ["d1"]
    assert view.created_at == T0 + timedelta(seconds=1)
    assert view.updated_at == T0 + timedelta(seconds=4) and view.version == 4


def test_documents_are_added_replaced_and_removed() -> None:
    removed = DocumentRemoved(document_id="d2")
    view = lead([saved(), doc("d1"), doc("d2"), doc("d1", size=99), removed])
    assert view is not None
    assert [(d.id, d.size) for d in view.documents] == [("d1", 99)]
    assert view.document("d1") is not None and view.document("d2") is None
    gone = lead([saved(), DocumentRemoved(document_id="nope")])
    assert gone is not None and gone.documents == () and gone.version == 2


def test_the_latest_evaluation_wins() -> None:
    view = lead([saved(), evaluated(1, 40, "D"), evaluated(2, 70, "B")])
    assert view is not None
    assert (view.status, view.ai_score, view.ai_label) == ("ai_evaluated", 70, "B")
    assert (view.evaluation_id, view.evaluation_job_id) == ("eval_2", job_id(2))


def test_events_before_the_lead_is_saved_are_ignored() -> None:
    assert lead([doc("d1"), evaluated(1)]) is None
    view = lead([doc("d1"), saved()])
    assert view is not None and view.documents == () and view.version == 2


def feed(*parts: tuple[str, list[AnyEvent]]) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    for stream, events in parts:
        out += history(stream, events, first=len(out) + 1)
    return out


def test_the_table_tracks_the_latest_evaluation_job_of_each_lead() -> None:
    table = LeadTable()
    events = feed(
        (STREAM, [saved(), saved(phone="2")]),
        ("lead:site_b:lead_1", [saved()]),
        (job_stream(1), [requested(metadata={"lead_id": "lead_1"})]),
        (job_stream(2), [requested(metadata={"lead_id": "lead_1"})]),
        (job_stream(3), [requested(job_type="report", metadata={"lead_id": "lead_1"})]),
        (job_stream(4), [requested(metadata={"lead_id": "nobody"})]),
        (job_stream(5), [requested(metadata={"lead_id": 5})]),
        ("site:site_a", []),
    )
    for r in events:
        table.apply(r)
    mine, theirs = table.get("site_a", "lead_1"), table.get("site_b", "lead_1")
    assert mine is not None and theirs is not None and len(table) == 2
    assert mine.last_job_id == job_id(2) and mine.version == 2  # its own stream's version
    assert theirs.last_job_id is None
    assert table.get("site_a", "nobody") is None
    copy = LeadTable()
    copy.load(table.dump())
    assert copy == table and list(copy) == list(table)
