"""`jobtrail prune` as an operator runs it: `main([...])`, its exit codes and output.

The store is built with a clock set 200 days back for the old jobs, so `--older-than 90d`
has something to remove and something to keep.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from eventstore import NO_STREAM, streams
from eventstore.events import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRequested,
    JobStarted,
    QuotaReserved,
)
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.records import uuid7
from projections.model import ReadModel
from service.cli import main

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=200)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def _build(data: Path) -> dict[str, list[str]]:
    """Old finished jobs of two sites, an old pending one, a recent finished one; usage."""
    clock = Clock(OLD)
    out: dict[str, list[str]] = {"old": [], "old_site2": [], "pending": [], "recent": []}
    async with open_file_store(data, clock=clock, watch=False) as store:

        async def job(site: str, ending: str | None) -> str:
            job_id = str(uuid7())
            s = streams.job(job_id)
            req = JobRequested(job_type="ai_evaluation", site_id=site, user_id="u1")
            await store.append(s, [req], NO_STREAM)
            await store.append(
                streams.usage(site, clock.at.strftime("%Y-%m")),
                [QuotaReserved(job_id=job_id)],
                -1,
            )
            if ending is None:
                return job_id
            await store.append(s, [JobStarted(attempt=1)], 1)
            last = {
                "completed": JobCompleted(result={"score": 1}),
                "failed": JobFailed(error_code="X", error_message="x", attempt=1),
                "cancelled": JobCancelled(by="u1"),
            }[ending]
            await store.append(s, [last], 2)
            return job_id

        for ending in ("completed", "failed", "cancelled"):
            out["old"].append(await job("site1", ending))
        out["old_site2"].append(await job("site2", "completed"))
        out["pending"].append(await job("site1", None))
        clock.at = NOW
        out["recent"].append(await job("site1", "completed"))
    return out


async def _model(data: Path) -> ReadModel:
    model = ReadModel()
    async with open_file_store(data, create=False, readonly=True, watch=False) as store:
        position = 0
        while events := await store.read_all(position + 1, 1000):
            for e in events:
                for p in model.projections:
                    p.apply(e)
            position = events[-1].position
    return model


def _files(data: Path) -> dict[str, bytes]:
    files = sorted(data.rglob("*"))
    return {str(p.relative_to(data)): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    data = tmp_path / "data"
    jobs = anyio.run(_build, data)
    return data, jobs


def _stream_log(data: Path, job_id: str) -> Path:
    log = FileLog(data, create=False, readonly=True)
    try:
        return log.layout.stream_path(streams.job(job_id))
    finally:
        log.close()


def test_dry_run_reports_and_changes_nothing(
    built: tuple[Path, dict[str, list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, jobs = built
    before = _files(data)
    assert main(["prune", "--older-than", "90d", "--dry-run", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "would prune 4 jobs (12 events)" in out and "site2" in out
    assert _files(data) == before  # byte for byte, the mark and checkpoint included


def test_prune_removes_old_finished_jobs_and_keeps_the_rest(
    built: tuple[Path, dict[str, list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, jobs = built
    usage_before = anyio.run(_model, data).usage
    assert main(["prune", "--older-than", "90d", "--data", str(data)]) == 0
    assert "pruned 4 jobs (12 events)" in capsys.readouterr().out
    for job_id in jobs["old"] + jobs["old_site2"]:
        assert not _stream_log(data, job_id).exists()
    for job_id in jobs["pending"] + jobs["recent"]:
        assert _stream_log(data, job_id).exists()
    model = anyio.run(_model, data)
    assert model.usage == usage_before  # monthly totals are never pruned
    assert {v.job_id for v in model.jobs} == set(jobs["pending"] + jobs["recent"])
    assert all(model.jobs.pruned(j) is not None for j in jobs["old"] + jobs["old_site2"])
    # A second run has nothing left to do.
    assert main(["prune", "--older-than", "90d", "--data", str(data)]) == 0
    assert "pruned 0 jobs" in capsys.readouterr().out
    # The store and every history stay clean, and a rebuild equals the live projections.
    assert main(["verify", "--data", str(data)]) == 0
    assert main(["replay", "--data", str(data)]) == 0


def test_site_narrows_the_prune(
    built: tuple[Path, dict[str, list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, jobs = built
    assert main(["prune", "--older-than", "90d", "--site", "site2", "--data", str(data)]) == 0
    assert "pruned 1 jobs" in capsys.readouterr().out
    assert not _stream_log(data, jobs["old_site2"][0]).exists()
    assert all(_stream_log(data, j).exists() for j in jobs["old"])


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    assert main(["prune", "--older-than", "90 days", "--data", str(data)]) == 2
    assert "--older-than" in capsys.readouterr().err
    assert main(["prune", "--older-than", "90d", "--site", "no/such", "--data", str(data)]) == 2
    assert main(["prune", "--older-than", "90d", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["prune", "--data", str(data)]) == 2  # --older-than is required


def test_help_describes_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--older-than", "--dry-run", "--site", "--data", "exit status"):
        assert flag in out


# -- leads: the live view equals a rebuilt one after a prune (DESIGN.md invariant 8) -----


def test_a_leads_newest_evaluation_job_is_kept_so_live_equals_rebuilt() -> None:
    """The lead's newest job B finished before the cut-off; an older job A was retried
    manually since. Pruning B would leave the live lead naming nothing (or B) while a
    rebuild names A: B is kept; the older finished jobs of a lead still go."""
    from eventstore import ANY, new
    from eventstore.events import JobRetried, LeadSaved
    from eventstore.memory import MemoryStore
    from projections.leads import EVALUATION_JOB_TYPE, LeadTable
    from service.operator.prune import prune_finished

    async def scenario() -> None:
        store = MemoryStore()
        await store.append(streams.lead("s1", "L1"), [new(LeadSaved(fields={"a": 1}))], ANY)
        a, b, c = (str(uuid7()) for _ in range(3))

        def req() -> JobRequested:
            return JobRequested(
                job_type=EVALUATION_JOB_TYPE,
                site_id="s1",
                user_id="u1",
                metadata={"lead_id": "L1"},
            )

        failed = JobFailed(error_code="x", error_message="x", attempt=1, retryable=True)
        await store.append(streams.job(c), [new(req())], NO_STREAM)  # older, finished
        await store.append(streams.job(c), [new(JobCompleted(result=1))], 1)
        await store.append(streams.job(a), [new(req())], NO_STREAM)
        await store.append(streams.job(a), [new(failed)], 1)
        await store.append(streams.job(b), [new(req())], NO_STREAM)  # the lead's newest
        await store.append(streams.job(b), [new(JobCompleted(result=1))], 1)
        cutoff = datetime.now(UTC)
        await anyio.sleep(0.01)
        retry = JobRetried(next_attempt_at=datetime.now(UTC), manual=True)
        await store.append(streams.job(a), [new(retry)], 2)  # A is pending again
        live = LeadTable()
        for e in await store.read_all(1, 10**6):
            live.apply(e)
        before = await store.head()
        result = await prune_finished(store, cutoff)
        assert result.jobs == 1  # C only: B is the lead's newest, A is pending
        assert await store.read_stream(streams.job(c)) == []
        assert await store.read_stream(streams.job(b)) != []
        for e in await store.read_all(before + 1, 10**6):
            live.apply(e)
        rebuilt = LeadTable()
        for e in await store.read_all(1, 10**6):
            rebuilt.apply(e)
        assert live == rebuilt
        view = live.get("s1", "L1")
        assert view is not None and view.last_job_id == b
        # A finishes; then A goes, and in the round after, B: the two views agree throughout.
        before = await store.head()
        await store.append(streams.job(a), [new(JobCompleted(result=2))], 3)
        for e in await store.read_all(before + 1, 10**6):
            live.apply(e)
        for expected_jobs, last in ((1, b), (1, None), (0, None)):
            await anyio.sleep(0.01)
            before = await store.head()
            result = await prune_finished(store, datetime.now(UTC))
            assert result.jobs == expected_jobs
            for e in await store.read_all(before + 1, 10**6):
                live.apply(e)
            rebuilt = LeadTable()
            for e in await store.read_all(1, 10**6):
                rebuilt.apply(e)
            assert live == rebuilt
            view = live.get("s1", "L1")
            assert view is not None and view.last_job_id == last

    anyio.run(scenario)
