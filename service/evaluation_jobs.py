"""An evaluation job once created: read it, retry it, cancel it (API.md section 1).

Every user of the job's site may act on it (the ops routes are for the site's operators),
unlike the generic routes, where members act on their own jobs only. Each command folds
the job's stream, decides, and appends with the version read, re-reading on a conflict.
"""

from __future__ import annotations

from typing import Final

from eventstore import AppendTo, EventStore, WrongExpectedVersion, new, streams
from eventstore.events import EvaluationQueued, JobRetried
from projections.jobs import JobView, load_job
from projections.leads import EVALUATION_JOB_TYPE
from service.app_state import AppState
from service.auth import Principal
from service.commands import cancel_job, folded
from service.errors import JobNotFound, NotRetryable, StorageUnavailable
from service.evaluations import JobAlreadyPending
from service.lead_jobs import ACTIVE, lead_jobs, lead_of, site_evaluations
from service.ops_common import SiteLocks

CONFLICT_RETRIES: Final = 20


async def evaluation_job(store: EventStore, who: Principal, job_id: str) -> JobView:
    """An evaluation job of the caller's site, whoever created it; else 404."""
    job = await load_job(store, job_id)
    if job is None or job.site_id != who.site_id or job.job_type != EVALUATION_JOB_TYPE:
        raise JobNotFound("Job not found.")
    return job


async def retry_evaluation(
    state: AppState, locks: SiteLocks, who: Principal, job_id: str
) -> JobView:
    """A new round of attempts for a failed job with `can_retry`; uses no quota."""
    async with locks.of(who.site_id):  # against a create of this process for the same lead
        for _ in range(CONFLICT_RETRIES):
            job = await evaluation_job(state.store, who, job_id)
            if not job.can_retry:
                raise NotRetryable("Only a failed job with attempts left can be retried.")
            lead_id = lead_of(job)
            lead_stream = streams.lead(who.site_id, lead_id)
            lead_version = await state.store.stream_version(lead_stream)  # before the jobs
            await state.runner.catch_up()
            active = site_evaluations(state.model, who.site_id, ACTIVE)
            other = next((j for j in lead_jobs(active, lead_id) if j.job_id != job_id), None)
            if other is not None:
                raise JobAlreadyPending(
                    "An evaluation is already in progress for this lead.", job_id=other.job_id
                )
            retried = JobRetried(next_attempt_at=state.clock(), manual=True, by=who.user_id)
            queued = EvaluationQueued(job_id=job_id, manual=True)
            try:
                recorded = await state.store.append_many(
                    [
                        AppendTo(streams.job(job_id), [new(retried)], job.version),
                        AppendTo(lead_stream, [new(queued)], lead_version),
                    ]
                )
            except WrongExpectedVersion:
                continue
            return folded(job, recorded[0])
    raise StorageUnavailable("The job kept changing; try again.")


async def cancel_evaluation(store: EventStore, who: Principal, job_id: str) -> JobView:
    """As `commands.cancel_job`, for any user of the job's site."""
    return await cancel_job(store, who, job_id, load=_evaluation_job)


async def _evaluation_job(store: EventStore, job_id: str, who: Principal) -> JobView:
    return await evaluation_job(store, who, job_id)
