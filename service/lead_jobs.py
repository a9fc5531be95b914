"""Which evaluation jobs a lead or a site has, read from the read model (after a catch-up).

An evaluation job names its lead in `metadata.lead_id`; jobs of a site are walked newest
first through the listings. A site's evaluation jobs are bounded by its monthly quota,
so these walks stay short.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import timedelta
from typing import Final

import msgspec

from projections.jobs import JobView
from projections.leads import EVALUATION_JOB_TYPE, LeadView
from projections.model import ReadModel

ACTIVE: Final = frozenset({"pending", "running"})
DEFAULT_SECONDS: Final = 30.0
RECENT: Final = 10
PAGE: Final = 500


def site_evaluations(
    model: ReadModel, site_id: str, statuses: Collection[str] | None = None
) -> Iterator[JobView]:
    """The site's evaluation jobs in the read model, newest first."""
    cursor = None
    while True:
        page = model.listings.page(
            site_id, statuses=statuses, job_type=EVALUATION_JOB_TYPE, limit=PAGE, cursor=cursor
        )
        yield from page.jobs
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def lead_jobs(jobs: Iterable[JobView], lead_id: str) -> Iterator[JobView]:
    """The jobs of one lead; the bytes test first spares decoding most others' metadata."""
    needle = msgspec.json.encode(lead_id)
    for job in jobs:
        if needle in job.metadata_json and lead_of(job) == lead_id:
            yield job


def lead_of(job: JobView) -> str:
    lead_id = job.metadata.get("lead_id")
    return lead_id if isinstance(lead_id, str) else ""


def evaluation_id(job: JobView) -> str:
    """The evaluation's id from the job's result; derived from the job id if it has none."""
    result = job.result
    found = result.get("id") if isinstance(result, dict) else None
    return found if isinstance(found, str) else "eval_" + job.job_id.replace("-", "")


def latest_evaluation(model: ReadModel, lead: LeadView) -> tuple[str, str] | None:
    """(evaluation id, job id) of the lead's latest completed evaluation, if any."""
    completed = site_evaluations(model, lead.site_id, ("completed",))
    job = next(lead_jobs(completed, lead.lead_id), None)
    if job is not None:
        return evaluation_id(job), job.job_id
    if lead.evaluation_id and lead.evaluation_job_id:  # its job may have been pruned
        return lead.evaluation_id, lead.evaluation_job_id
    return None


def expected_wait(model: ReadModel, site_id: str) -> timedelta:
    """How long a job accepted now should take: average x (1 + ahead).

    `average` is the mean run (started -> completed) of the site's 10 most recently
    requested completed evaluation jobs, 30 s without any; `ahead` counts the site's
    evaluation jobs pending or processing now.
    """
    recent = model.listings.page(
        site_id, statuses=("completed",), job_type=EVALUATION_JOB_TYPE, limit=RECENT
    )
    runs = [
        (j.completed_at - j.started_at).total_seconds()
        for j in recent.jobs
        if j.completed_at is not None and j.started_at is not None
    ]
    runs = [r for r in runs if r >= 0]
    average = sum(runs) / len(runs) if runs else DEFAULT_SECONDS
    ahead = sum(1 for _ in site_evaluations(model, site_id, ACTIVE))
    return timedelta(seconds=average * (1 + ahead))
