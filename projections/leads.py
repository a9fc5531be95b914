"""Leads per site: a pure fold of each `lead:<site>:<lead>` stream, and the table of all leads.

A new lead's status is "new". The older system's seeds (000, 003) show only one lead status,
"ai_evaluated", set when an evaluation completes; the value a lead had before that is not
shown, so we take the usual CRM word for a lead nobody has looked at yet. `LeadSaved`
replaces the lead's own fields and keeps its status, score and documents.

Besides its own stream the fold takes the `requested` event of every `ai_evaluation` job
whose `metadata.lead_id` names the lead, to know the lead's latest evaluation job
(`last_job_id`), which the service checks for a job still pending or processing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final, assert_never

import msgspec
from msgspec.structs import replace

from eventstore import streams
from eventstore.events import (
    DocumentAdded,
    DocumentRemoved,
    EvaluationQueued,
    IdempotencyKeyUsed,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobLeaseRenewed,
    JobProgressed,
    JobPruned,
    JobRequested,
    JobRetried,
    JobStarted,
    LeadEvaluated,
    LeadSaved,
    QuotaReserved,
    QuotaSet,
)
from eventstore.records import RecordedEvent
from eventstore.store import EventStore

INITIAL_STATUS: Final = "new"
EVALUATED_STATUS: Final = "ai_evaluated"
EVALUATION_JOB_TYPE: Final = "ai_evaluation"


class LeadDocument(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A document of a lead, as the API lists it (plus the blob's content hash)."""

    id: str
    document_type: str
    mime_type: str
    size: int
    sha256: str
    uploaded_at: datetime


class LeadView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A lead: its own fields, evaluation outcome, documents, and the lead stream's version."""

    site_id: str
    lead_id: str
    fields: dict[str, Any]
    status: str = INITIAL_STATUS
    ai_score: int | None = None
    ai_label: str | None = None
    evaluation_id: str | None = None
    evaluation_job_id: str | None = None
    last_job_id: str | None = None
    documents: tuple[LeadDocument, ...] = ()
    created_at: datetime
    updated_at: datetime
    version: int

    def document(self, document_id: str) -> LeadDocument | None:
        return next((d for d in self.documents if d.id == document_id), None)


def apply_lead(view: LeadView | None, recorded: RecordedEvent) -> LeadView | None:
    """The lead after one event; None until it was first saved."""
    at = recorded.recorded_at
    event = recorded.event
    if view is None:
        if not isinstance(event, LeadSaved):
            return None
        category, parts = streams.parse(recorded.stream)
        if category != streams.LEAD:
            return None
        return _saved_first(parts[0], parts[1], event, recorded)
    match event:
        case LeadSaved(fields=fields):
            return replace(view, fields=fields, updated_at=at, version=recorded.version)
        case DocumentAdded():
            document = LeadDocument(
                id=event.document_id,
                document_type=event.document_type,
                mime_type=event.mime_type,
                size=event.size,
                sha256=event.sha256,
                uploaded_at=event.uploaded_at,
            )
            documents = _without(view.documents, event.document_id)
            return replace(
                view, documents=(*documents, document), updated_at=at, version=recorded.version
            )
        case DocumentRemoved(document_id=document_id):
            documents = _without(view.documents, document_id)
            return replace(view, documents=documents, updated_at=at, version=recorded.version)
        case EvaluationQueued():
            return replace(view, version=recorded.version)  # a guard, not a change of the lead
        case LeadEvaluated():
            return replace(
                view,
                status=EVALUATED_STATUS,
                ai_score=event.score,
                ai_label=event.label,
                evaluation_id=event.evaluation_id,
                evaluation_job_id=event.job_id,
                updated_at=at,
                version=recorded.version,
            )
        case JobRequested():
            # From the job's own stream: not a change of the lead's stream or its version.
            return replace(view, last_job_id=streams.job_id_of(recorded.stream))
        case (
            JobStarted()
            | JobProgressed()
            | JobCompleted()
            | JobFailed()
            | JobRetried()
            | JobCancelled()
            | JobCancelRequested()
            | JobLeaseRenewed()
            | QuotaReserved()
            | QuotaSet()
            | IdempotencyKeyUsed()
            | JobPruned()
        ):
            return view
        case _:
            assert_never(event)


def _saved_first(site_id: str, lead_id: str, event: LeadSaved, recorded: RecordedEvent) -> LeadView:
    """A new lead: its first `LeadSaved`, in the stream of (site_id, lead_id)."""
    at = recorded.recorded_at
    return LeadView(
        site_id=site_id,
        lead_id=lead_id,
        fields=event.fields,
        created_at=at,
        updated_at=at,
        version=recorded.version,
    )


async def load_lead(store: EventStore, site_id: str, lead_id: str) -> LeadView | None:
    """The lead folded from its own stream, so every process (serve, worker) reads it current."""
    view: LeadView | None = None
    for recorded in await store.read_stream(streams.lead(site_id, lead_id)):
        view = apply_lead(view, recorded)
    return view


def _without(documents: tuple[LeadDocument, ...], document_id: str) -> tuple[LeadDocument, ...]:
    return tuple(d for d in documents if d.id != document_id)


def lead_of_job(event: JobRequested) -> tuple[str, str] | None:
    """The (site, lead) an evaluation job is for, or None for another job type."""
    if event.job_type != EVALUATION_JOB_TYPE:
        return None
    lead_id = event.metadata.get("lead_id")
    return (event.site_id, lead_id) if isinstance(lead_id, str) else None


class _State(msgspec.Struct, frozen=True):
    leads: list[LeadView]


_OF_A_LEAD: Final = (LeadSaved, DocumentAdded, DocumentRemoved, LeadEvaluated)
"""Events of a lead's own stream, as a tuple built once: `A | B` in the fold built a union
per call (6% of a replay)."""


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_State)


class LeadTable:
    """Every lead by (site, lead id); owns its dict and applies the per-lead fold."""

    name = "leads"
    folds: Final = (
        LeadSaved,
        DocumentAdded,
        DocumentRemoved,
        LeadEvaluated,
        JobRequested,
        JobPruned,
    )
    """The only event types `apply` folds: a fold over the feed may skip the others."""

    def __init__(self) -> None:
        self._views: dict[tuple[str, str], LeadView] = {}

    def apply(self, recorded: RecordedEvent) -> None:
        """Fold one feed event in; events that concern no lead are ignored."""
        event = recorded.event
        if isinstance(event, JobRequested):  # the most common of those folded here
            of_job = lead_of_job(event)
            if of_job is None:
                return
            key = of_job
            view = self._views.get(key)
        elif isinstance(event, _OF_A_LEAD):
            known = self._known(recorded.stream)
            if known is not None:
                key, view = known
            else:  # a new lead, or a stream of another kind: the name checked in full
                category, parts = streams.parse(recorded.stream)
                if category != streams.LEAD or not isinstance(event, LeadSaved):
                    return  # no lead's (or `apply_lead` makes none of it)
                key = (parts[0], parts[1])
                self._views[key] = _saved_first(parts[0], parts[1], event, recorded)
                return
        elif isinstance(event, JobPruned):
            self._forget(event)
            return
        else:
            return  # the common case: most of the feed is job events
        view = apply_lead(view, recorded)
        if view is not None:
            self._views[key] = view

    def _known(self, stream: str) -> tuple[tuple[str, str], LeadView] | None:
        """The key and view of an existing lead's stream, without validating its name again.

        A view's ids were valid when it was made (they hold no ":"), so a stream that finds
        one this way is exactly that lead's canonical name.
        """
        category, _, rest = stream.partition(":")
        if category != streams.LEAD:
            return None
        site_id, _, lead_id = rest.partition(":")
        view = self._views.get((site_id, lead_id))
        return ((site_id, lead_id), view) if view is not None else None

    def _forget(self, event: JobPruned) -> None:
        """A pruned job is no lead's latest job any more: as in a rebuild without its events.

        That rebuild names no older job either: retention keeps a lead's latest evaluation
        job while an older one of the lead is still there (`service/operator/prune.py`),
        so when the latest goes, no other job of the lead is left to name.
        """
        if event.lead_id is None:
            return
        key = (event.site_id, event.lead_id)
        view = self._views.get(key)
        if view is not None and view.last_job_id == event.job_id:
            self._views[key] = replace(view, last_job_id=None)

    def get(self, site_id: str, lead_id: str) -> LeadView | None:
        return self._views.get((site_id, lead_id))

    def __len__(self) -> int:
        return len(self._views)

    def __iter__(self) -> Iterator[LeadView]:
        return iter(self._views.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LeadTable) and self._views == other._views

    __hash__ = None  # type: ignore[assignment]

    def dump(self) -> bytes:
        return _ENCODER.encode(_State(list(self._views.values())))

    def load(self, data: bytes) -> None:
        self._views = {(v.site_id, v.lead_id): v for v in _DECODER.decode(data).leads}
