"""`jobtrail replay` on a store built by the real service and worker, intact and damaged.

The store is built once per module (uvicorn serving `create_app`, a worker from
`open_worker`, jobs created over HTTP); the serve lifespan saves the read model's
checkpoint at shutdown, which is what replay compares with. Tests copy it before changing it.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from eventstore import streams
from eventstore.filelog import FileLog
from eventstore.filestore import FileStore, open_file_store
from projections.checkpoint import read_checkpoint, write_checkpoint
from projections.model import READ_MODEL_CHECKPOINT, ReadModel
from service.app import create_app
from service.auth import Principal, Role, issue_token
from service.cli import main
from service.operator import replay
from service.operator.feedscan import Bar, Partner
from service.settings import Settings, with_handlers
from tests.eventstore.helpers import spawn, wait_for_line
from tests.uvicorn_client import served_client
from worker.assemble import open_worker

SECRET = "test-secret-for-jobtrail-operator-tests-0123"


@dataclass(frozen=True)
class Built:
    """A data directory written by the service and a worker, and what was done to it."""

    data: Path
    completed: str  # a noop job of site1 that ran to completion
    cancelled: str  # a noop job of site1 cancelled before any worker saw it
    other_site: str  # a completed noop job of site2
    evaluation: str  # an ai_evaluation job of site1 (reserves quota, names a lead)


def _auth(site: str = "site1", user: str = "user1", role: Role = "member") -> dict[str, str]:
    token = issue_token(SECRET, Principal(site, user, role), 3600)
    return {"Authorization": f"Bearer {token}", "X-Site-Id": site, "X-User-Id": user}


async def _create(client: httpx.AsyncClient, site: str = "site1") -> str:
    r = await client.post("/api/jobs", json={"type": "noop"}, headers=_auth(site))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def _until_final(client: httpx.AsyncClient, job_id: str, site: str) -> None:
    """Long-poll the job (`Prefer: wait`) as a client would, until it ends."""
    headers = {**_auth(site), "Prefer": "wait=5"}
    while True:
        r = await client.get(f"/api/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("completed", "failed", "cancelled"):
            return


async def _build(data: Path) -> Built:
    settings = with_handlers(
        Settings(
            data=data,
            secret=SECRET,
            retry_base_delay=0.05,
            handler_modules=("tests.service.noop_handlers",),
        )
    )
    async with open_file_store(data) as store:
        app = create_app(store, settings)
        async with served_client(app) as client:
            built = await _use(client, store, settings, data)
            # The service's read model applies everything before it shuts down.
            with anyio.fail_after(30):
                await app.state.jobtrail.runner.wait_for(await store.head())
    assert (data / "projections" / READ_MODEL_CHECKPOINT).is_file()
    return built


async def _use(
    client: httpx.AsyncClient, store: FileStore, settings: Settings, data: Path
) -> Built:
    """What users and a worker do: jobs created, one cancelled, a quota, a lead evaluated."""
    completed = await _create(client)
    cancelled = await _create(client)
    r = await client.post(f"/api/jobs/{cancelled}/cancel", headers=_auth())
    assert r.status_code == 202, r.text
    quota = {"limit": 5, "tier": "pro"}
    r = await client.put("/api/ops/sites/site1/quota", json=quota, headers=_auth(role="admin"))
    assert r.status_code == 200, r.text
    lead = {"first_name": "Maria", "last_name": "Lopez", "email": "m@example.com"}
    r = await client.put("/api/ops/leads/lead_1", json=lead, headers=_auth())
    assert r.status_code in (200, 201), r.text
    r = await client.post("/api/ops/leads/lead_1/ai-evaluation", headers=_auth())
    assert r.status_code == 201, r.text
    evaluation = r.json()["data"]["job_id"]
    other_site = await _create(client, "site2")
    async with (
        open_worker(store, settings, concurrency=4, env={}) as worker,
        anyio.create_task_group() as running,
    ):
        await running.start(worker.run)
        for job_id, site in ((completed, "site1"), (other_site, "site2"), (evaluation, "site1")):
            await _until_final(client, job_id, site)
        running.cancel_scope.cancel()
    return Built(data, completed, cancelled, other_site, evaluation)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One store per module; tests that change it take a `store` copy."""
    data = tmp_path_factory.mktemp("built") / "data"
    return anyio.run(_build, data)


def copy_of(built: Built, tmp_path: Path) -> Built:
    data = tmp_path / "data"
    shutil.copytree(built.data, data)
    return Built(data, built.completed, built.cancelled, built.other_site, built.evaluation)


@pytest.fixture
def store(built: Built, tmp_path: Path) -> Built:
    return copy_of(built, tmp_path)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def checkpoint_path(data: Path) -> Path:
    return data / "projections" / READ_MODEL_CHECKPOINT


def rewrite_checkpoint(data: Path, change: Any) -> None:
    """Load the saved read model, let `change(model)` alter it, save it back as serve would."""
    found = read_checkpoint(checkpoint_path(data))
    assert found is not None
    checkpoint, states = found
    model = ReadModel()
    for p in model.projections:
        p.load(states[p.name])
    change(model)
    dumped = {p.name: p.dump() for p in model.projections}
    write_checkpoint(checkpoint_path(data), checkpoint.position, checkpoint.event_id, dumped)


# -- comparing with the live projections -------------------------------------------------


def test_a_rebuild_of_a_store_the_service_wrote_equals_its_checkpoint(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "replay", "--data", str(built.data))
    assert code == 0, out + err
    for name in ("jobs", "listings", "usage", "leads"):
        assert any(line.startswith(name) and " same " in line for line in out.splitlines()), out
    assert "the rebuild equals the live projections" in out
    assert err == "", "no progress bar when standard error is not a terminal"


def test_replay_json_says_same_per_projection(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "replay", "--data", str(built.data), "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["same"] is True and answer["problem"] is None
    assert answer["checkpoint"]["position"] == answer["position"] > 0
    assert {p["name"]: p["same"] for p in answer["projections"]} == {
        "jobs": True,
        "listings": True,
        "usage": True,
        "leads": True,
    }
    counts = {p["name"]: p["live"] for p in answer["projections"]}
    assert counts["jobs"] == 4 and counts["leads"] == 1 and counts["usage"] >= 2


def test_a_changed_job_in_the_checkpoint_is_named_with_its_fields(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(model: ReadModel) -> None:
        view = model.jobs.get(store.completed)
        assert view is not None and view.status == "completed"
        model.jobs._views[store.completed] = msgspec.structs.replace(
            view, status="running", progress=40
        )

    rewrite_checkpoint(store.data, change)
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1, out
    lines = [line for line in out.splitlines() if store.completed in line]
    assert len(lines) == 1, out
    assert "status (live 'running', rebuilt 'completed')" in lines[0]
    assert "progress (live 40, rebuilt 100)" in lines[0]
    assert "jobs      DIFFERENT" in out and "listings  same" in out
    assert "DIFFERS from the live projections" in out

    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data), "--json")
    jobs = next(p for p in json.loads(out)["projections"] if p["name"] == "jobs")
    assert jobs["same"] is False
    assert jobs["differences"] == [
        {
            "key": store.completed,
            "only_in": None,
            "fields": [
                {"field": "status", "live": "running", "rebuilt": "completed"},
                {"field": "progress", "live": 40, "rebuilt": 100},
            ],
        }
    ]


def test_what_is_missing_from_each_projection_is_named(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(model: ReadModel) -> None:
        del model.jobs._views[store.other_site]
        model.usage._sites.pop("site1")
        model.listings._indexes.pop(("site2", None, None))
        model.leads._views.pop(("site1", "lead_1"))

    rewrite_checkpoint(store.data, change)
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1
    assert f"{store.other_site}: only in the rebuilt projection" in out
    assert "site site1: only in the rebuilt projection" in out
    assert "site2/*/*: only in the rebuilt projection" in out
    assert "site1/lead_1: only in the rebuilt projection" in out
    assert out.count("DIFFERENT") == 4


def test_many_differences_are_listed_up_to_a_bound(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(model: ReadModel) -> None:
        template = model.jobs.get(store.completed)
        assert template is not None
        for n in range(25):
            job_id = f"00000000-0000-7000-8000-{n:012d}"
            model.jobs._views[job_id] = msgspec.structs.replace(template, job_id=job_id)

    rewrite_checkpoint(store.data, change)
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1
    assert out.count("only in the live projection") == 20
    assert "... and 5 more" in out


def test_without_a_checkpoint_replay_rebuilds_and_counts(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint_path(store.data).unlink()
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 0, out
    assert "jobs      4 entries" in out
    assert "no checkpoint of the live projections" in out


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint"), "cannot be read: not a checkpoint file"),
        (lambda p: p.write_bytes(p.read_bytes()[:-3]), "cannot be read: truncated"),
        (lambda p: flip(p, p.stat().st_size - 10), "cannot be read: checksum mismatch"),
    ],
    ids=["garbage", "truncated", "bit-flip"],
)
def test_an_unreadable_checkpoint_is_exit_1_with_the_reason(
    store: Built, capsys: pytest.CaptureFixture[str], damage: Any, says: str
) -> None:
    damage(checkpoint_path(store.data))
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1
    assert "the live projections' checkpoint" in out and says in out


def test_a_checkpoint_of_another_store_is_exit_1(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    found = read_checkpoint(checkpoint_path(store.data))
    assert found is not None
    checkpoint, states = found
    write_checkpoint(checkpoint_path(store.data), checkpoint.position, "another-id", states)
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1 and "not of this store" in out
    write_checkpoint(checkpoint_path(store.data), checkpoint.position + 1000, "x", states)
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1 and "the feed ends at" in out


# -- as of a position or a time ----------------------------------------------------------


def test_as_of_shows_a_job_pending_then_running_then_completed(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FileLog(built.data, create=False, readonly=True)
    history = log.read_stream(streams.job(built.completed))
    log.close()
    by_type = {e.type: e for e in history}
    requested, started, completed = by_type["requested"], by_type["started"], by_type["completed"]
    seen = []
    for position in (requested.position, started.position, completed.position):
        code, out, _ = run_cli(
            capsys, "replay", "--data", str(built.data), "--as-of", str(position), "--job",
            built.completed,
        )  # fmt: skip
        assert code == 0, out
        answer = json.loads(out)
        assert answer["as_of"]["position"] == position
        assert answer["job"]["job_id"] == built.completed
        seen.append(answer["job"]["status"])
    assert seen == ["pending", "running", "completed"]
    assert answer["job"]["result"] == {"ok": True} and answer["job"]["site_id"] == "site1"

    code, out, err = run_cli(
        capsys, "replay", "--data", str(built.data), "--as-of", str(requested.position - 1),
        "--job", built.completed,
    )  # fmt: skip
    assert code == 1 and out == "" and "did not exist" in err

    at = (started.recorded_at + timedelta(microseconds=1)).isoformat()
    code, out, _ = run_cli(capsys, "replay", "--data", str(built.data), "--as-of", at, "--job",
                           built.completed)  # fmt: skip
    answer = json.loads(out)
    assert answer["job"]["status"] == "running"
    assert started.position <= answer["as_of"]["position"] < completed.position

    code, out, _ = run_cli(capsys, "replay", "--data", str(built.data), "--job", built.completed)
    assert json.loads(out)["job"]["status"] == "completed", "without --as-of: the feed's end"


def test_as_of_shows_usage_and_listings(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    log = FileLog(built.data, create=False, readonly=True)
    requested = log.read_stream(streams.job(built.evaluation))[0]
    log.close()
    month = requested.recorded_at.strftime("%Y-%m")
    data = str(built.data)
    code, out, _ = run_cli(capsys, "replay", "--data", data, "--usage", f"site1:{month}")
    assert code == 0
    usage = json.loads(out)["usage"]
    assert usage == {"used": 1, "limit": 5, "remaining": 4, "month": month, "tier": "pro"}
    before = str(requested.position - 1)
    code, out, _ = run_cli(capsys, "replay", "--data", data, "--as-of", before, "--usage", "site1")
    assert json.loads(out)["usage"]["used"] == 0

    code, out, _ = run_cli(capsys, "replay", "--data", data, "--listing", "site1")
    answer = json.loads(out)
    assert answer["count"] == 3 and answer["next_cursor"] is None
    assert [j["job_id"] for j in answer["jobs"]][1:] == [built.cancelled, built.completed]
    code, out, _ = run_cli(
        capsys, "replay", "--data", data, "--listing", "site1", "--status", "cancelled"
    )
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [built.cancelled]
    code, out, _ = run_cli(
        capsys, "replay", "--data", data, "--listing", "site1", "--status", "pending,running",
        "--as-of", str(requested.position),
    )  # fmt: skip
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [built.evaluation, built.completed]
    code, out, _ = run_cli(capsys, "replay", "--data", data, "--listing", "site1", "--limit", "1")
    assert json.loads(out)["count"] == 1 and json.loads(out)["next_cursor"] is not None


# -- usage, damage, crashes, live appenders ---------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--as-of", "12"],
        ["--as-of", "yesterday", "--job", "0190d6a0-0000-7000-8000-000000000000"],
        ["--job", "not-a-uuid"],
        ["--usage", "site1:2026-13"],
        ["--usage", "bad site"],
        ["--listing", "site1", "--status", "done"],
        ["--listing", "site1", "--limit", "0"],
        ["--status", "pending"],
        ["--job", "0190d6a0-0000-7000-8000-000000000000", "--listing", "site1"],
        ["--no-such-flag"],
    ],
)
def test_bad_usage_is_exit_2(built: Built, argv: list[str]) -> None:
    assert main(["replay", "--data", str(built.data), *argv]) == 2


def test_a_missing_or_foreign_data_directory_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "replay", "--data", str(tmp_path / "none"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "replay", "--data", str(tmp_path))
    assert code == 2 and "not a jobtrail data directory" in err


def test_help_describes_every_flag_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "replay", "--help")
    assert code == 0
    for flag in ("--data", "--json", "--as-of", "--job", "--usage", "--listing", "--status",
                 "--user", "--type", "--limit"):  # fmt: skip
        assert flag in out
    assert "exit status" in out and "  2  bad usage" in out


def test_a_bit_flip_in_the_feed_is_reported_not_a_crash(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = store.data / "feed" / "feed.log"
    flip(feed, feed.stat().st_size // 2)
    code, out, err = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 1
    assert "the feed is damaged after position" in out and "Traceback" not in err
    code, out, err = run_cli(capsys, "replay", "--data", str(store.data), "--job", store.cancelled)
    assert code == 1 and "the feed is damaged" in err


def test_a_bit_flip_in_a_stream_log_does_not_change_the_rebuild(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    path = FileLog(store.data, create=False, readonly=True).layout.stream_path(
        streams.job(store.completed)
    )
    flip(path, path.stat().st_size - 5)
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
    assert code == 0, "replay reads the feed only; `verify` reports the stream log"


@pytest.fixture
def appender(store: Built) -> Iterator[Any]:
    """An appender in another OS process, adding job histories to `store` until stopped."""
    child = spawn("crash", store.data, 7, 2)
    wait_for_line(child, "READY")
    yield child
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)


def test_replay_beside_an_appender_compares_at_the_checkpoint(
    store: Built, appender: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "replay", "--data", str(store.data), "--json")
    assert code == 0, out
    assert appender.poll() is None, "the appender was still appending"


def test_replay_after_crashes_reports_and_rebuilds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    for seed in range(3):  # a short crash loop: appenders killed mid-append
        procs = [spawn("crash", data, seed * 10 + k, 2) for k in range(2)]
        for p in procs:
            wait_for_line(p, "READY")
        anyio.run(anyio.sleep, 0.05 * (seed + 1))
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.communicate(timeout=30)
        code, out, err = run_cli(capsys, "replay", "--data", str(data))
        assert code == 0, out + err
        assert "no checkpoint" in out


def test_the_parallel_rebuild_equals_the_serial_one(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FileLog(built.data, create=False, readonly=True)
    head = log.head()
    log.close()
    serial = replay.rebuild(built.data, head, parallel=False)
    parallel = replay.rebuild(built.data, head, parallel=True)
    assert serial.scan.position == parallel.scan.position == head > 0
    assert serial.model == parallel.model
    assert capsys.readouterr().err == "", "the second process did its part"
    assert (serial.processes, parallel.processes) == (1, 2)


def test_a_hung_second_process_is_ended_and_its_part_folded_here(
    built: Built, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def hung(answer: type[Any], *argv: str) -> Partner[Any]:
        return Partner(answer, "-n1", "-r1", "import time; time.sleep(60)", module="timeit")

    monkeypatch.setattr(replay, "Partner", hung)
    monkeypatch.setattr(replay, "PARTNER_GRACE_SECONDS", 0.5)
    log = FileLog(built.data, create=False, readonly=True)
    head = log.head()
    log.close()
    serial = replay.rebuild(built.data, head, parallel=False)
    started = time.monotonic()
    parallel = replay.rebuild(built.data, head, parallel=True)
    assert time.monotonic() - started < 30
    assert parallel.model == serial.model and parallel.processes == 1
    assert "no answer within" in capsys.readouterr().err


def test_progress_goes_to_standard_error_when_asked_for(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FileLog(built.data, create=False, readonly=True)
    with Bar("rebuilding", log.head(), show=True) as bar:
        rebuilt = replay.rebuild(log, log.head(), bar=bar)
    log.close()
    assert rebuilt.scan.damage is None and capsys.readouterr().out == ""
