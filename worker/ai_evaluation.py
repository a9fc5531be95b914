"""The built-in `ai_evaluation` job: evaluate a rental lead from its documents.

The steps of the older cron processor (seed 003), on the event store:

1. load the lead (its own stream, current) and its documents (the blob store);
2. a defensive quota check: fail with `QuotaExceeded` only when the site's `used` for
   the job's month is above the limit (an admin lowered it after the job was accepted);
3. extract text, skipping a document that cannot be read (`document_unreadable` flag);
4. evaluate (rules, or an OpenAI-compatible model);
5. `completed` with the evaluation, and `lead_evaluated` on the lead's stream in the same
   append, so the lead's `ai_score`, `ai_label` and `status` follow atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio

from eventstore import ANY, AppendTo, EventStore, InvalidId, new, streams
from eventstore.clock import timestamp
from eventstore.events import LeadEvaluated
from projections.leads import EVALUATION_JOB_TYPE, LeadDocument, load_lead
from projections.usage import load_usage
from worker.attempt import AttemptContext
from worker.evaluation.documents import UnreadableDocument, extract_text
from worker.evaluation.model import DocumentInput, EvaluationError, Evaluator, LeadInput
from worker.handlers import Handlers, JobContext, JobError

log = logging.getLogger("jobtrail.worker")

ReadBlob = Callable[[str], Awaitable[bytes]]


def evaluation_id(job_id: str) -> str:
    """The evaluation's id, derived from its job's id (as the service derives it)."""
    return "eval_" + job_id.replace("-", "")


def evaluation_handlers(
    store: EventStore,
    read_blob: ReadBlob,
    evaluator: Evaluator,
    clock: Callable[[], datetime],
) -> Handlers:
    """The `Handlers` holding the built-in `ai_evaluation` job type, wired to its parts."""
    handlers = Handlers()

    @handlers.job(EVALUATION_JOB_TYPE)
    async def evaluate_lead(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(ctx, AttemptContext), "built-in jobs run in this worker"
        try:
            return await _evaluate(ctx, params, store, read_blob, evaluator, clock)
        except EvaluationError as exc:
            raise JobError(exc.code, exc.message, retryable=exc.retryable) from exc

    return handlers


async def _evaluate(
    ctx: AttemptContext,
    params: dict[str, Any],
    store: EventStore,
    read_blob: ReadBlob,
    evaluator: Evaluator,
    clock: Callable[[], datetime],
) -> dict[str, Any]:
    job = ctx.job
    lead_id = params.get("lead_id")
    try:
        lead_id = streams.valid_id(lead_id, "lead_id")  # type: ignore[arg-type]
    except InvalidId:
        raise JobError(
            "ResourceNotFound", "The job names no valid lead.", retryable=False
        ) from None
    await ctx.progress(10, "Loading the lead and its documents...")
    lead = await load_lead(store, job.site_id, lead_id)
    if lead is None:
        raise JobError("ResourceNotFound", f"Lead {lead_id} not found.", retryable=False)
    if not lead.documents:
        raise JobError(
            "ResourceNotFound", "The lead has no documents to evaluate.", retryable=False
        )
    usage = await load_usage(store, job.site_id, job.created_at.strftime("%Y-%m"))
    if usage.used > usage.limit:
        raise JobError(
            "QuotaExceeded",
            f"Monthly evaluation limit ({usage.limit}) reached for this site.",
            retryable=False,
        )
    documents, unreadable = await _read_documents(lead.documents, read_blob, ctx)
    if not documents:
        raise JobError(
            "StorageError", f"None of the lead's {len(unreadable)} documents could be read."
        )
    await ctx.progress(50, "Evaluating...")
    verdict = await evaluator(LeadInput(lead_id=lead_id, fields=lead.fields), documents)
    risk_flags = list(verdict.risk_flags)
    if unreadable and "document_unreadable" not in risk_flags:
        risk_flags.append("document_unreadable")
    eval_id = evaluation_id(job.job_id)
    ctx.also_on_success.append(
        AppendTo(
            streams.lead(job.site_id, lead_id),
            [
                new(
                    LeadEvaluated(
                        job_id=job.job_id,
                        evaluation_id=eval_id,
                        score=verdict.score,
                        label=verdict.label,
                    )
                )
            ],
            ANY,
        )
    )
    return {
        "id": eval_id,
        "lead_id": lead_id,
        "score": verdict.score,
        "label": verdict.label,
        "recommendation": verdict.recommendation,
        "summary": verdict.summary,
        "risk_flags": risk_flags,
        "fraud_signals": list(verdict.fraud_signals),
        "evaluated_at": timestamp(clock()),
        "model_version": verdict.model_version,
        "documents_read": len(documents),
        "documents_unreadable": unreadable,
    }


async def _read_documents(
    stored: tuple[LeadDocument, ...], read_blob: ReadBlob, ctx: AttemptContext
) -> tuple[list[DocumentInput], list[str]]:
    """The documents that could be read, and the ids of those that could not (logged)."""
    documents: list[DocumentInput] = []
    unreadable: list[str] = []
    for doc in stored:
        try:
            data = await read_blob(doc.sha256)
            text = await anyio.to_thread.run_sync(extract_text, doc.mime_type, data)
        except (OSError, ValueError, UnreadableDocument) as exc:
            log.warning(
                "job %s attempt %d: document %s (%s) unreadable, skipped: %s",
                ctx.job_id,
                ctx.attempt,
                doc.id,
                doc.document_type,
                exc,
            )
            unreadable.append(doc.id)
            continue
        documents.append(
            DocumentInput(
                id=doc.id,
                document_type=doc.document_type,
                mime_type=doc.mime_type,
                data=data,
                text=text,
            )
        )
    return documents, unreadable
