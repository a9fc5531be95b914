"""How an evaluation job answers on the ops routes: one form per state (API.md section 1).

The generic job's `running` is `processing` here, and a completed job shows its result as
the `evaluation`. The worker's result is expected to hold the evaluation's fields
(`id`, `score`, `label`, `recommendation`, `summary`, `risk_flags`, `fraud_signals`,
`evaluated_at`, `model_version`); a field it lacks is null (lists: empty), its `id` is
derived from the job id and `evaluated_at` is the completion time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from projections.jobs import JobView
from service.http import timestamp
from service.lead_jobs import evaluation_id, lead_of

DEFAULT_PROGRESS: Final = "Evaluation in progress..."
"""Shown while processing until the worker reports a message of its own."""


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def evaluation_json(job: JobView) -> dict[str, Any]:
    result = job.result if isinstance(job.result, dict) else {}
    return {
        "id": evaluation_id(job),
        "score": result.get("score"),
        "label": result.get("label"),
        "recommendation": result.get("recommendation"),
        "summary": result.get("summary"),
        "risk_flags": result.get("risk_flags") or [],
        "fraud_signals": result.get("fraud_signals") or [],
        "evaluated_at": result.get("evaluated_at") or timestamp(job.completed_at),
        "model_version": result.get("model_version"),
    }


def evaluation_form(job: JobView, now: datetime) -> tuple[dict[str, Any], int]:
    """The job's `data` in its state's form and the status code: 202 while not final."""
    status = "processing" if job.status == "running" else job.status
    data: dict[str, Any] = {
        "job_id": job.job_id,
        "lead_id": lead_of(job),
        "status": status,
        "requested_at": timestamp(job.created_at),
    }
    if job.status == "pending":
        if job.error_code is not None:  # waiting for an automatic retry
            data["retry_count"] = job.retry_count
            data["next_attempt_at"] = timestamp(job.next_attempt_at)
            data["error_code"] = job.error_code
            data["error_message"] = job.error
        return data, 202
    if job.status == "running":
        data["started_at"] = timestamp(job.started_at)
        data["progress"] = job.progress
        data["progress_message"] = job.progress_message or DEFAULT_PROGRESS
        data["duration_ms"] = _ms(job.started_at, now)
        data["cancel_requested"] = job.cancel_requested
        return data, 202
    if job.status == "completed":
        data["completed_at"] = timestamp(job.completed_at)
        data["duration_ms"] = _ms(job.started_at, job.completed_at)
        data["evaluation"] = evaluation_json(job)
    elif job.status == "failed":
        data["error_code"] = job.error_code
        data["error_message"] = job.error
        data["can_retry"] = job.can_retry
        data["retry_count"] = job.retry_count
        data["max_retries"] = job.max_retries
    else:
        data["cancelled_at"] = timestamp(job.cancelled_at)
    return data, 200
