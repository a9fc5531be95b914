"""The read model's checkpoint: saved by a serve process, loaded by the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import NO_STREAM, new, streams
from eventstore.events import JobRequested
from eventstore.filestore import open_file_store
from projections.model import ReadModel
from projections.runner import fold_as_of
from service.app import create_app
from service.app_state import AppState
from service.commands import new_job_id
from service.settings import Settings
from tests.service.conftest import SECRET

pytestmark = pytest.mark.anyio


async def test_a_restart_resumes_from_the_checkpoint_and_equals_a_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data=data, secret=SECRET)
    async with open_file_store(data) as store:
        first = create_app(store, settings)
        async with first.router.lifespan_context(first):
            for _ in range(3):
                event = JobRequested(job_type="noop", site_id="s1", user_id="u1")
                await store.append(streams.job(new_job_id()), [new(event)], NO_STREAM)
            state: AppState = first.state.jobtrail
            await state.runner.wait_for(await store.head())
        checkpoint = data / "projections" / "read-model.ckpt"
        assert checkpoint.is_file()
        saved = checkpoint.stat().st_mtime_ns

        event = JobRequested(job_type="noop", site_id="s1", user_id="u1")
        await store.append(streams.job(new_job_id()), [new(event)], NO_STREAM)
        second = create_app(store, settings)
        async with second.router.lifespan_context(second):
            state = second.state.jobtrail
            await state.runner.wait_for(await store.head())
            rebuilt = ReadModel()
            await fold_as_of(store, rebuilt.projections, await store.head())
            assert len(state.model.jobs) == 4
            assert state.model == rebuilt
        assert checkpoint.stat().st_mtime_ns > saved
