"""410 Gone for a job retention removed, decided where every route's 404 is answered.

Each job route answers `JobNotFound` when the job's stream is empty; a pruned job's
stream is. The read model keeps a tombstone per pruned job (`JobTable.pruned`), so the
one error handler turns that 404 into 410 for a caller who could have seen the job,
and leaves it 404 for anyone else (another site, another member, another job type on
the evaluation routes), exactly as for a job that never existed.
"""

from __future__ import annotations

from starlette.requests import Request

from eventstore.errors import JobtrailError
from eventstore.streams import valid_job_id
from projections.leads import EVALUATION_JOB_TYPE
from service.app_state import AppState
from service.errors import Gone
from service.http import principal_of

_OPS_JOBS = "/api/ops/ai-evaluation-jobs/"


async def gone_or(request: Request, not_found: JobtrailError) -> JobtrailError:
    """`Gone` if the route's job was pruned and the caller could see it; else `not_found`."""
    state: AppState | None = getattr(request.app.state, "jobtrail", None)
    raw = request.path_params.get("job_id")
    if state is None or not isinstance(raw, str):
        return not_found
    try:
        job_id = valid_job_id(raw)
        who = principal_of(request, query_token=True)
    except JobtrailError:
        return not_found
    pruned = state.model.jobs.pruned(job_id)
    if pruned is None:
        await state.runner.catch_up()  # a prune a moment ago, in another process
        pruned = state.model.jobs.pruned(job_id)
    if pruned is None or pruned.site_id != who.site_id:
        return not_found
    if request.url.path.startswith(_OPS_JOBS):
        visible = pruned.job_type == EVALUATION_JOB_TYPE
    else:
        visible = who.is_admin or pruned.user_id == who.user_id
    return Gone("The job was removed by retention.") if visible else not_found
