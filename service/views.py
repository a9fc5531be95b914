"""How a job looks in each answer: the API's field names, built from a JobView."""

from __future__ import annotations

from typing import Any

import msgspec

from projections.jobs import JobView
from service.http import timestamp


def job_json(job: JobView) -> dict[str, Any]:
    """A job as `GET /api/jobs/{id}` shows it: every field, `null` when it has no value."""
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "status": job.status,
        "user_id": job.user_id,
        "metadata": msgspec.Raw(job.metadata_json),
        "result": msgspec.Raw(job.result_json),
        "error": job.error,
        "error_code": job.error_code,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "completed_at": timestamp(job.completed_at),
        "progress": 100 if job.status == "completed" else job.progress,
        "progress_message": job.progress_message,
        "retry_count": job.retry_count,
        "max_retries": job.max_retries,
        "next_attempt_at": timestamp(job.next_attempt_at),
        "priority": job.priority,
        "can_retry": job.can_retry,
        "cancel_requested": job.cancel_requested,
    }


_LEGACY_STATUS = {
    "pending": "queued",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "failed",
}


def legacy_job_json(job: JobView) -> dict[str, Any]:
    """A job in the older file-backed store's form (`/api/job-status/{id}`)."""
    error = None
    if job.status == "failed":
        error = job.error or "Job failed"
    elif job.status == "cancelled":
        error = "Job cancelled"
    return {
        "job_id": job.job_id,
        "status": _LEGACY_STATUS[job.status],
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
        "result": msgspec.Raw(job.result_json),
        "error_message": error,
        "progress": 100 if job.status == "completed" else job.progress,
    }
