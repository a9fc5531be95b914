"""What an evaluator takes (a lead and its documents) and gives (an `Evaluation`).

Evaluators are plain async callables, so the `ai_evaluation` handler does not care which
one it runs: `evaluate(lead, documents) -> Evaluation`. Errors they raise carry the job's
error code and whether the worker retries (API.md section 1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal

import msgspec

Label = Literal["A", "B", "C", "D"]
Recommendation = Literal["approve", "review", "reject"]

RULES_MODEL: Final = "jobtrail-rules-1"


class LeadInput(msgspec.Struct, frozen=True, kw_only=True):
    """The lead's own fields as the ops API stored them (first_name, monthly_rent...)."""

    lead_id: str
    fields: dict[str, Any]


class DocumentInput(msgspec.Struct, frozen=True, kw_only=True):
    """One document of the lead, read from the blob store.

    `text` is the extracted text of a text or PDF document; None for an image (which the
    rules evaluator counts, unread, and an LLM evaluator may look at through `data`).
    """

    id: str
    document_type: str
    mime_type: str
    data: bytes
    text: str | None


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """An evaluator's verdict; the handler adds `id` and `evaluated_at` to make the result."""

    score: int
    label: Label
    recommendation: Recommendation
    summary: str
    risk_flags: list[str]
    fraud_signals: list[str]
    model_version: str


def label_for(score: int) -> Label:
    """A (>= 80), B (65-79), C (50-64), D (< 50)."""
    if score >= 80:
        return "A"
    if score >= 65:
        return "B"
    if score >= 50:
        return "C"
    return "D"


def recommendation_for(label: Label) -> Recommendation:
    """approve (A), review (B, C), reject (D)."""
    return "approve" if label == "A" else "reject" if label == "D" else "review"


class EvaluationError(Exception):
    """An evaluation that cannot finish: `code` is the job's error code."""

    code: str = "ProcessingError"
    retryable: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelTimeout(EvaluationError):
    """The model did not answer in time (retried)."""

    code = "ModelTimeout"


class ProcessingError(EvaluationError):
    """Anything else that went wrong, a malformed model answer included (retried)."""

    code = "ProcessingError"


class StorageError(EvaluationError):
    """No document of the lead could be read (retried)."""

    code = "StorageError"


class ResourceNotFound(EvaluationError):
    """The lead or its documents are missing (not retried; an operator may fix and retry)."""

    code = "ResourceNotFound"
    retryable = False


Evaluator = Callable[[LeadInput, Sequence[DocumentInput]], Awaitable[Evaluation]]
