"""Stored events as the job rules read them: the tag and the few fields the rules use.

`jobtrail verify` reads every event of the feed once for both the store check and the
rules; decoding whole events (their dicts, times, strings) was most of the rules' time.
These Structs decode the same msgpack and skip every other field. Each has the `type` of
its tag, and every stored tag is here (a new event type needs one too: a test checks).
"""

from __future__ import annotations

from typing import ClassVar, Final

import msgspec


class RuleEvent(msgspec.Struct, frozen=True, tag_field="type", gc=False):
    """Base of the light events: `type` is the stored tag."""

    type: ClassVar[str]


class Requested(RuleEvent, tag="requested", frozen=True, gc=False):
    type: ClassVar[str] = "requested"
    site_id: str
    max_retries: int = 3


class Started(RuleEvent, tag="started", frozen=True, gc=False):
    type: ClassVar[str] = "started"
    attempt: int


class Progressed(RuleEvent, tag="progressed", frozen=True, gc=False):
    type: ClassVar[str] = "progressed"


class Completed(RuleEvent, tag="completed", frozen=True, gc=False):
    type: ClassVar[str] = "completed"


class Failed(RuleEvent, tag="failed", frozen=True, gc=False):
    type: ClassVar[str] = "failed"
    will_retry: bool = False


class Retried(RuleEvent, tag="retried", frozen=True, gc=False):
    type: ClassVar[str] = "retried"
    manual: bool = False


class Cancelled(RuleEvent, tag="cancelled", frozen=True, gc=False):
    type: ClassVar[str] = "cancelled"


class CancelRequested(RuleEvent, tag="cancel_requested", frozen=True, gc=False):
    type: ClassVar[str] = "cancel_requested"


class LeaseRenewed(RuleEvent, tag="lease_renewed", frozen=True, gc=False):
    type: ClassVar[str] = "lease_renewed"
    attempt: int


class Pruned(RuleEvent, tag="job_pruned", frozen=True, gc=False):
    type: ClassVar[str] = "job_pruned"
    job_id: str


class Other(RuleEvent, frozen=True, gc=False):
    """An event of no job stream: only its tag matters (`<type> in a job stream`)."""


class QuotaReserved(Other, tag="quota_reserved", frozen=True, gc=False):
    type: ClassVar[str] = "quota_reserved"


class QuotaSet(Other, tag="quota_set", frozen=True, gc=False):
    type: ClassVar[str] = "quota_set"


class LeadSaved(Other, tag="lead_saved", frozen=True, gc=False):
    type: ClassVar[str] = "lead_saved"


class DocumentAdded(Other, tag="document_added", frozen=True, gc=False):
    type: ClassVar[str] = "document_added"


class DocumentRemoved(Other, tag="document_removed", frozen=True, gc=False):
    type: ClassVar[str] = "document_removed"


class LeadEvaluated(Other, tag="lead_evaluated", frozen=True, gc=False):
    type: ClassVar[str] = "lead_evaluated"


class EvaluationQueued(Other, tag="evaluation_queued", frozen=True, gc=False):
    type: ClassVar[str] = "evaluation_queued"


class IdempotencyKeyUsed(Other, tag="idempotency_key_used", frozen=True, gc=False):
    type: ClassVar[str] = "idempotency_key_used"


AnyRuleEvent = (
    Requested
    | Started
    | Progressed
    | Completed
    | Failed
    | Retried
    | Cancelled
    | CancelRequested
    | LeaseRenewed
    | Pruned
    | QuotaReserved
    | QuotaSet
    | LeadSaved
    | DocumentAdded
    | DocumentRemoved
    | LeadEvaluated
    | EvaluationQueued
    | IdempotencyKeyUsed
)


class RuleEnvelope(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A stored envelope (`records.RecordedEvent`) with its id and time left raw."""

    position: int
    stream: str
    version: int
    id: msgspec.Raw
    recorded_at: msgspec.Raw
    event: AnyRuleEvent


RULE_RECORDS: Final = msgspec.msgpack.Decoder(list[list[RuleEnvelope]])
"""Several records' payloads as one msgpack array, as `verify`'s feed walk hands them over
(`eventstore.verify.FeedHook`)."""
