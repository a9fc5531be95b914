"""`jobtrail import-legacy DIR`: the older file-backed job store (seed 002) as jobtrail jobs.

Fixtures are legacy stores written here, in both formats (`{id}.json`, `{id}/events.log`),
with the malformed and hostile entries an old directory may hold. What is checked is
what an operator and a client would see: the command's output and exit status, the
jobs as the store folds them, `jobtrail verify`, and the answers of the real service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from eventstore import streams
from eventstore.events import JobRequested
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.records import AppendTo, new
from projections.jobs import JobView, apply_job
from service.app import create_app
from service.auth import Principal, Role, issue_token
from service.cli import main
from service.operator.legacy_history import history
from service.operator.legacy_records import MAX_RECORD_BYTES, LegacyJob
from service.settings import Settings
from tests.uvicorn_client import served_client

SECRET = "test-secret-for-jobtrail-tests-0123456789"

DONE = "12345678-1234-1234-1234-123456789abc"  # seed 002's example job
FAILED = "0193a000-0000-7000-8000-000000000001"
RUNNING = "0193a000-0000-7000-8000-000000000002"  # events.log
QUEUED = "0193a000-0000-7000-8000-000000000003"  # events.log
BARE = "0193a000-0000-7000-8000-000000000004"  # status only
UPPER = "0193A000-0000-7000-8000-00000000000A"  # uppercase name: read as lowercase


def write_json(directory: Path, name: str, record: object) -> None:
    (directory / name).write_text(json.dumps(record))


def write_log(directory: Path, job_id: str, *lines: object) -> None:
    (directory / job_id).mkdir()
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (directory / job_id / "events.log").write_text(text)


def good_store(directory: Path) -> dict[str, str]:
    """A legacy store of good records in both formats; job id -> its status."""
    directory.mkdir()
    write_json(
        directory,
        f"{DONE}.json",
        {
            "job_id": DONE,
            "status": "completed",
            "created_at": "2025-01-01T00:00:00",
            "updated_at": "2025-01-01T00:01:00",
            "result": {"suggestions": [{"id": "1", "text": "Test suggestion"}]},
            "progress": 100,
        },
    )
    write_json(
        directory,
        f"{FAILED}.json",
        {
            "status": "failed",
            "created_at": "2025-03-04T05:06:07.250+02:00",
            "updated_at": "2025-03-04T03:10:00Z",
            "error_message": "LLM timed out",
            "progress": 33.4,
            "result": {"partial": True},
        },
    )
    write_log(
        directory,
        RUNNING,
        {"job_id": RUNNING, "status": "queued", "created_at": "2025-02-01T10:00:00Z"},
        "",
        {"status": "running", "updated_at": "2025-02-01T10:00:05Z", "progress": 10},
        {"status": "running", "updated_at": "2025-02-01T10:00:09Z", "progress": 75.5},
    )
    write_log(
        directory,
        QUEUED,
        {
            "status": "queued",
            "created_at": "2025-02-02T08:00:00",
            "updated_at": "2025-02-02T08:00:00",
        },
    )
    write_json(directory, f"{BARE}.json", {"status": "completed"})
    write_json(directory, f"{UPPER}.json", {"status": "completed", "result": [1, 2]})
    return {
        DONE: "completed",
        FAILED: "failed",
        RUNNING: "running",
        QUEUED: "queued",
        BARE: "completed",
        UPPER.lower(): "completed",
    }


def new_data(path: Path) -> Path:
    FileLog(path, create=True).close()
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def job_of(data: Path, job_id: str) -> JobView | None:
    log = FileLog(data, create=False, readonly=True)
    try:
        view: JobView | None = None
        for recorded in log.read_stream(streams.job(job_id)):
            view = apply_job(view, recorded)
        return view
    finally:
        log.close()


def head_of(data: Path) -> int:
    log = FileLog(data, create=False, readonly=True)
    try:
        return log.head()
    finally:
        log.close()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path, dict[str, str], str]:
    """A good legacy store imported into a new data directory: (data, DIR, jobs, output)."""
    source = tmp_path / "jobs"
    jobs = good_store(source)
    data = new_data(tmp_path / "data")
    code, out, err = run_cli(
        capsys, "import-legacy", str(source), "--site", "site1", "--data", str(data)
    )
    assert code == 0, out + err
    return data, source, jobs, out


# -- what is imported ------------------------------------------------------------------


def test_both_formats_keep_ids_times_progress_result_and_error(
    imported: tuple[Path, Path, dict[str, str], str],
) -> None:
    data, _, jobs, out = imported
    assert (
        "6 jobs imported (3 completed, 1 failed, 1 queued, 1 running), 0 already present, "
        "0 skipped, 0 ignored (site site1, from " in out
    )
    views = {job_id: job_of(data, job_id) for job_id in jobs}
    for job_id, view in views.items():
        assert view is not None, job_id
        assert (view.job_type, view.site_id, view.user_id) == ("legacy", "site1", "legacy")
        assert view.is_final and not view.can_retry, job_id

    done = views[DONE]
    assert done is not None and done.status == "completed"
    assert done.created_at == at("2025-01-01T00:00:00+00:00")
    assert done.updated_at == done.completed_at == at("2025-01-01T00:01:00+00:00")
    assert done.result == {"suggestions": [{"id": "1", "text": "Test suggestion"}]}
    assert done.progress == 100 and done.error is None

    failed = views[FAILED]
    assert failed is not None and failed.status == "failed"
    assert failed.created_at == at("2025-03-04T03:06:07.250+00:00")  # +02:00 read as UTC
    assert failed.updated_at == at("2025-03-04T03:10:00+00:00")
    assert (failed.error_code, failed.error) == ("ImportedFailed", "LLM timed out")
    assert failed.progress == 33
    assert failed.metadata == {"legacy_format": "json", "legacy_result": {"partial": True}}

    running = views[RUNNING]  # events.log: the last line wins, field by field
    assert running is not None and running.status == "failed"
    assert running.error_code == "ImportedUnfinished"
    assert running.error is not None and "still running" in running.error
    assert running.created_at == at("2025-02-01T10:00:00+00:00")
    assert running.started_at == running.created_at
    assert running.updated_at == at("2025-02-01T10:00:09+00:00")
    assert running.progress == 76  # 75.5, rounded half up
    assert running.metadata == {"legacy_format": "events.log"}

    queued = views[QUEUED]
    assert queued is not None and queued.status == "failed"
    assert queued.error_code == "ImportedUnfinished" and queued.progress == 0
    assert queued.created_at == queued.updated_at == at("2025-02-02T08:00:00+00:00")
    assert queued.started_at == queued.created_at

    upper = views[UPPER.lower()]
    assert upper is not None and upper.result == [1, 2]


def test_a_record_without_times_takes_its_file_time(tmp_path: Path) -> None:
    source = tmp_path / "jobs"
    source.mkdir()
    write_json(source, f"{BARE}.json", {"status": "completed"})
    when = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    os.utime(source / f"{BARE}.json", (when, when))
    data = new_data(tmp_path / "data")
    assert main(["import-legacy", str(source), "--site", "s", "--data", str(data)]) == 0
    view = job_of(data, BARE)
    assert view is not None
    assert view.created_at == view.updated_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_imported_histories_follow_the_job_rules(
    imported: tuple[Path, Path, dict[str, str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = imported[0]
    code, out, err = run_cli(capsys, "verify", "--data", str(data))
    assert code == 0, out + err
    assert "6 jobs checked" in out


def test_a_second_run_imports_nothing(
    imported: tuple[Path, Path, dict[str, str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, source, jobs, _ = imported
    head = head_of(data)
    before = {job_id: job_of(data, job_id) for job_id in jobs}
    code, out, err = run_cli(
        capsys, "import-legacy", str(source), "--site", "site1", "--data", str(data)
    )
    assert code == 0, err
    assert "0 jobs imported, 6 already present, 0 skipped" in out
    assert head_of(data) == head
    assert {job_id: job_of(data, job_id) for job_id in jobs} == before


def test_a_record_changed_since_the_import_is_not_imported_again(
    imported: tuple[Path, Path, dict[str, str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, source, _, _ = imported
    write_json(source, f"{DONE}.json", {"status": "failed", "error_message": "changed"})
    head = head_of(data)
    code, out, _ = run_cli(
        capsys, "import-legacy", str(source), "--site", "site1", "--data", str(data)
    )
    assert code == 0 and "6 already present" in out
    assert head_of(data) == head
    view = job_of(data, DONE)
    assert view is not None and view.status == "completed"


def test_an_import_cut_between_its_appends_is_finished_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "jobs"
    good_store(source)
    data = new_data(tmp_path / "data")
    job = LegacyJob(
        job_id=RUNNING,
        entry=RUNNING,
        format="events.log",
        status="running",
        created_at=at("2025-02-01T10:00:00+00:00"),
        updated_at=at("2025-02-01T10:00:09+00:00"),
        progress=76,
    )
    first = history(job, "site1", "legacy")[0]  # what a run killed after one append left
    log = FileLog(data, create=False)
    try:
        log.append_many([AppendTo(streams.job(RUNNING), first.events, 0)])
    finally:
        log.close()
    cut = job_of(data, RUNNING)
    assert cut is not None and cut.status == "running"
    code, out, err = run_cli(
        capsys, "import-legacy", str(source), "--site", "site1", "--data", str(data)
    )
    assert code == 0, out + err
    assert "6 jobs imported" in out
    view = job_of(data, RUNNING)
    assert view is not None and (view.status, view.error_code) == ("failed", "ImportedUnfinished")
    assert view.version == 4  # requested, started, progressed, failed: nothing twice
    code, out, _ = run_cli(capsys, "verify", "--data", str(data))
    assert code == 0, out


def test_a_job_of_the_store_with_the_same_id_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "jobs"
    good_store(source)
    data = new_data(tmp_path / "data")
    log = FileLog(data, create=False)
    try:
        log.append_many(
            [
                AppendTo(
                    streams.job(DONE),
                    [new(JobRequested(job_type="noop", site_id="site1", user_id="u"))],
                    0,
                )
            ]
        )
    finally:
        log.close()
    code, out, _ = run_cli(
        capsys, "import-legacy", str(source), "--site", "site1", "--data", str(data)
    )
    assert code == 1
    assert "5 jobs imported" in out and "1 skipped" in out
    assert f"skipped {DONE}.json: a job with this id is in the store already" in out
    view = job_of(data, DONE)
    assert view is not None and (view.job_type, view.status) == ("noop", "pending")


def test_jobs_imported_into_one_site_are_not_imported_into_another(
    imported: tuple[Path, Path, dict[str, str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, source, _, _ = imported
    code, out, _ = run_cli(
        capsys, "import-legacy", str(source), "--site", "site2", "--data", str(data)
    )
    assert code == 1
    assert "0 jobs imported, 0 already present, 6 skipped" in out
    assert out.count("imported already, into site site1") == 6


# -- bad records -----------------------------------------------------------------------

GOOD = {"status": "completed", "created_at": "2025-01-01T00:00:00Z"}
BAD_ID = "0193b000-0000-7000-8000-0000000000{:02d}"


def _bad_entries(directory: Path) -> dict[str, str]:
    """Bad entries written into `directory`; entry name -> what the report says of it."""
    bad: dict[str, str] = {}

    def json_file(n: int, content: str | bytes, says: str) -> None:
        name = f"{BAD_ID.format(n)}.json"
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        bad[name] = says

    json_file(1, '{"status": "completed", ', "not valid JSON")
    json_file(2, "[1, 2]", "not a JSON object")
    json_file(3, '{"status": 3}', "Expected `str`, got `int` - at `$.status`")
    json_file(4, '{"status": "done"}', "unknown status done")
    json_file(5, '{"created_at": "2025-01-01T00:00:00"}', "missing required field `status`")
    json_file(6, '{"status": "failed", "progress": "50%"}', "at `$.progress`")
    json_file(7, '{"status": "failed", "progress": 101}', "progress 101 is not between 0 and 100")
    json_file(8, '{"status": "failed", "progress": true}', "at `$.progress`")
    json_file(9, '{"status": "failed", "created_at": "yesterday"}', "is not an ISO 8601 time")
    json_file(10, '{"status": "failed", "updated_at": "2999-01-01T00:00:00"}', "in the future")
    json_file(
        11,
        '{"status": "completed", "created_at": "2025-01-02", "updated_at": "2025-01-01"}',
        "updated_at is before created_at",
    )
    json_file(12, json.dumps({**GOOD, "job_id": DONE}), "is not the one of its name")
    json_file(13, '{"status": "failed", "error_message": 7}', "at `$.error_message`")
    json_file(
        14,
        b'{"status": "completed", "result": "' + b"x" * MAX_RECORD_BYTES + b'"}',
        f"over the {MAX_RECORD_BYTES} read",
    )
    json_file(15, b"\xff\xfe{}", "not valid JSON")

    def log_dir(n: int, text: str | None, says: str) -> None:
        name = BAD_ID.format(n)
        (directory / name).mkdir()
        if text is not None:
            (directory / name / "events.log").write_text(text)
        bad[name] = says

    log_dir(20, json.dumps(GOOD) + "\n{torn", "events.log line 2 is not valid JSON")
    log_dir(21, "\n\n", "events.log holds no lines")
    log_dir(22, None, f"no {BAD_ID.format(22)}/events.log")
    log_dir(23, json.dumps(GOOD) + '\n"running"\n', "events.log line 2 is not a JSON object")
    log_dir(24, json.dumps(GOOD) + '\n{"status": "cancelled"}\n', "unknown status cancelled")

    # hostile entries: links out of DIR, names that are no ids, things that are not files
    outside = directory.parent / "outside.json"
    outside.write_text(json.dumps(GOOD))
    os.symlink(outside, directory / f"{BAD_ID.format(30)}.json")
    bad[f"{BAD_ID.format(30)}.json"] = "a symbolic link"
    os.symlink(directory.parent, directory / BAD_ID.format(31))
    bad[BAD_ID.format(31)] = "a symbolic link"
    (directory / BAD_ID.format(32)).mkdir()
    os.symlink(outside, directory / BAD_ID.format(32) / "events.log")
    bad[BAD_ID.format(32)] = "events.log cannot be opened"
    (directory / BAD_ID.format(33)).mkdir()
    (directory / BAD_ID.format(33) / "events.log").mkdir()
    bad[BAD_ID.format(33)] = "events.log is not a regular file"
    os.mkfifo(directory / f"{BAD_ID.format(34)}.json")
    bad[f"{BAD_ID.format(34)}.json"] = "neither a regular file nor a directory"
    (directory / "..evil.json").write_text(json.dumps(GOOD))
    bad["..evil.json"] = "the file name is not a job id"
    (directory / "not-a-job").mkdir()
    bad["not-a-job"] = "the directory name is not a job id"
    (directory / "bad\x1b[31mname.json").write_text(json.dumps(GOOD))
    bad["'bad\\x1b[31mname.json'"] = "the file name is not a job id"
    # one job in both forms
    write_json(directory, f"{BAD_ID.format(40)}.json", GOOD)
    write_log(directory, BAD_ID.format(40), GOOD)
    bad[BAD_ID.format(40)] = "the job is stored more than once"
    return bad


def test_bad_records_are_reported_and_skipped_and_the_rest_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "jobs"
    jobs = good_store(source)
    bad = _bad_entries(source)
    (source / "README.txt").write_text("the old job store")
    data = new_data(tmp_path / "data")
    code, out, err = run_cli(
        capsys, "import-legacy", str(source), "--site", "site1", "--data", str(data)
    )
    assert code == 1, out + err
    assert (
        f"6 jobs imported (3 completed, 1 failed, 1 queued, 1 running), 0 already present, "
        f"{len(bad)} skipped, 1 ignored" in out
    )
    lines = out.splitlines()
    for name, says in bad.items():
        line = next((x for x in lines if x.startswith(f"  skipped {name}")), None)
        assert line is not None, f"{name} not reported:\n{out}"
        assert says in line, line
    assert "  ignored README.txt: not a legacy job record" in lines
    assert "\x1b" not in out, "a name's control characters are escaped"
    for job_id in jobs:
        assert job_of(data, job_id) is not None
    for n in range(1, 41):
        assert job_of(data, BAD_ID.format(n)) is None, n
    # requested, started, completed: 3 x 3; failed and running add progressed: 2 x 4; queued 3
    assert head_of(data) == 20
    code, out, _ = run_cli(capsys, "verify", "--data", str(data))
    assert code == 0, out


# -- usage -----------------------------------------------------------------------------


def test_a_missing_dir_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = new_data(tmp_path / "data")
    code, out, err = run_cli(
        capsys, "import-legacy", str(tmp_path / "nope"), "--site", "s", "--data", str(data)
    )
    assert (code, out) == (2, "")
    assert "does not exist" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(
        capsys, "import-legacy", str(tmp_path / "file"), "--site", "s", "--data", str(data)
    )
    assert code == 2 and "is not a directory" in err
    assert head_of(data) == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--site", "a:b"], "--site must be 1-64 characters"),
        (["--site", "s", "--user", "../u"], "--user must be 1-64 characters"),
    ],
)
def test_bad_flags_are_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    source = tmp_path / "jobs"
    good_store(source)
    data = new_data(tmp_path / "data")
    code, out, err = run_cli(capsys, "import-legacy", str(source), "--data", str(data), *flags)
    assert (code, out) == (2, "") and says in err
    code, out, err = run_cli(capsys, "import-legacy", str(source), "--data", str(data))
    assert (code, out) == (2, "") and "the following arguments are required: --site" in err
    assert head_of(data) == 0


def test_a_missing_or_foreign_data_directory_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "jobs"
    good_store(source)
    code, _, err = run_cli(
        capsys, "import-legacy", str(source), "--site", "s", "--data", str(tmp_path / "nope")
    )
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "nope").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    code, _, err = run_cli(
        capsys, "import-legacy", str(source), "--site", "s", "--data", str(foreign)
    )
    assert code == 2 and "is not a jobtrail data directory" in err
    assert list(foreign.iterdir()) == []


def test_help_describes_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "import-legacy", "--help")
    assert code == 0
    out = " ".join(out.split())
    for word in (
        "DIR",
        "--site",
        "--user",
        "--data",
        "JOBTRAIL_DATA",
        "ImportedUnfinished",
        "events.log",
        "exit status",
        "already present",
    ):
        assert word in out, word
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "import-legacy" in out


# -- through the real service ------------------------------------------------------------


@asynccontextmanager
async def served(data: Path) -> AsyncIterator[httpx.AsyncClient]:
    """uvicorn on 127.0.0.1 serving the app over `data`, and a client of it."""
    settings = Settings(data=data, secret=SECRET)
    async with open_file_store(data) as store, served_client(create_app(store, settings)) as c:
        yield c


def auth(site: str = "site1", user: str = "legacy", role: Role = "member") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, Principal(site, user, role), 3600)}"}


async def _import_beside(data: Path, source: Path) -> int:
    return await anyio.to_thread.run_sync(
        main, ["import-legacy", str(source), "--site", "site1", "--data", str(data)]
    )


@pytest.mark.anyio
async def test_imported_jobs_answer_on_job_status_as_the_old_service_did(
    tmp_path: Path,
) -> None:
    source = tmp_path / "jobs"
    good_store(source)
    data = new_data(tmp_path / "data")
    admin = auth(role="admin")
    async with served(data) as client:
        # imported while the service runs on the same data directory
        answer = await client.get(f"/api/job-status/{DONE}", headers=admin)
        assert answer.status_code == 404 and answer.json()["error"] == "Job not found"
        assert await _import_beside(data, source) == 0

        answer = await client.get(f"/api/job-status/{DONE}", headers=admin)
        assert answer.status_code == 200
        assert answer.json() == {
            "job_id": DONE,
            "status": "completed",
            "created_at": "2025-01-01T00:00:00.000Z",
            "updated_at": "2025-01-01T00:01:00.000Z",
            "result": {"suggestions": [{"id": "1", "text": "Test suggestion"}]},
            "error_message": None,
            "progress": 100,
        }
        answer = await client.get(f"/api/job-status/{FAILED}", headers=admin)
        assert answer.json() == {
            "job_id": FAILED,
            "status": "failed",
            "created_at": "2025-03-04T03:06:07.250Z",
            "updated_at": "2025-03-04T03:10:00.000Z",
            "result": None,
            "error_message": "LLM timed out",
            "progress": 33,
        }
        answer = await client.get(f"/api/job-status/{RUNNING}", headers=admin)
        body = answer.json()
        assert (body["status"], body["progress"]) == ("failed", 76)
        assert "still running" in body["error_message"]
        answer = await client.get(f"/api/job-status/{UPPER}", headers=admin)
        assert answer.status_code == 200 and answer.json()["job_id"] == UPPER.lower()

        # the generic routes: the site's admins and the creator see them; nobody else
        job = (await client.get(f"/api/jobs/{QUEUED}", headers=admin)).json()
        assert (job["job_type"], job["status"], job["user_id"]) == ("legacy", "failed", "legacy")
        assert (job["error_code"], job["can_retry"]) == ("ImportedUnfinished", False)
        assert job["created_at"] == "2025-02-02T08:00:00.000Z"
        page = (await client.get("/api/jobs?type=legacy&limit=500", headers=admin)).json()
        assert page["count"] == 6
        mine = await client.get(f"/api/job-status/{DONE}", headers=auth())
        assert mine.status_code == 200
        for headers in (auth(user="someone"), auth(site="site2", role="admin")):
            answer = await client.get(f"/api/job-status/{DONE}", headers=headers)
            assert answer.status_code == 404 and answer.json()["error"] == "Job not found"
            assert (await client.get(f"/api/jobs/{DONE}", headers=headers)).status_code == 404
        retry = await client.post(f"/api/jobs/{FAILED}/retry", headers=admin)
        assert retry.status_code == 409 and retry.json()["error"] == "NotRetryable"

        assert await _import_beside(data, source) == 0  # again: nothing new
        again = await client.get(f"/api/job-status/{DONE}", headers=admin)
        assert again.json()["updated_at"] == "2025-01-01T00:01:00.000Z"


# -- two imports at once -----------------------------------------------------------------

IMPORT = """
import sys
from service.cli import main
raise SystemExit(main(["import-legacy", sys.argv[1], "--site", "site1", "--data", sys.argv[2]]))
"""


def test_two_imports_at_once_import_each_job_once(tmp_path: Path) -> None:
    source = tmp_path / "jobs"
    source.mkdir()
    count = 60
    ids = [f"0193c000-0000-7000-8000-{n:012d}" for n in range(count)]
    for n, job_id in enumerate(ids):
        if n % 2:
            write_json(source, f"{job_id}.json", {"status": "completed", "result": n})
        else:
            write_log(
                source, job_id, {"status": "running", "progress": n + 1}, {"status": "failed"}
            )
    data = new_data(tmp_path / "data")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", IMPORT, str(source), str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    imported = sum(
        int(out.split("import-legacy: ")[1].split(" jobs imported")[0]) for out, _ in outs
    )
    assert imported >= count  # each job once; a job both finished counts in both
    for n, job_id in enumerate(ids):
        view = job_of(data, job_id)
        assert view is not None, job_id
        assert view.version == (3 if n % 2 else 4), job_id
    assert head_of(data) == count // 2 * 3 + count // 2 * 4
    assert main(["verify", "--data", str(data)]) == 0


def test_a_job_pruned_since_its_import_is_not_imported_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "jobs"
    good_store(source)
    data = new_data(tmp_path / "data")
    args = ("import-legacy", str(source), "--site", "site1", "--data", str(data))
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "6 jobs imported" in out, out
    code, out, err = run_cli(capsys, "prune", "--older-than", "90d", "--data", str(data))
    assert code == 0, err
    assert "pruned 4 jobs" in out, out  # the 2 without times carry the files' (recent) ones
    assert job_of(data, DONE) is None  # its legacy times are long past: pruned
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    assert "0 jobs imported" in out and "6 already present (4 pruned since)" in out, out
    assert job_of(data, DONE) is None
