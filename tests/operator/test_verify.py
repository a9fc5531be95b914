"""`jobtrail verify`: the store check and the job rules, on stores the service wrote and broke.

The appender these tests run in other OS processes is `tests/operator/job_appender.py`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventstore import shared_logs, streams
from eventstore.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobProgressed,
    JobRequested,
    JobStarted,
    QuotaReserved,
)
from eventstore.filelog import FileLog
from eventstore.layout import Layout
from eventstore.records import AppendTo, RecordedEvent, new, new_event_id, uuid7
from eventstore.shard_claims import ShardClaims
from eventstore.verify_logs import LogsSeen, logs_seen
from projections.history_check import HistoryCheck
from service.operator import verify
from service.operator.feedscan import Partner
from tests.eventstore.helpers import REPO
from tests.operator.test_replay import Built, built, copy_of, flip, run_cli, store

__all__ = ["built", "store"]  # fixtures shared with test_replay: one store per module

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


# -- the rule check on its own -----------------------------------------------------------


def _recorded(stream: str, version: int, position: int, event: Event) -> RecordedEvent:
    return RecordedEvent(position, stream, version, new_event_id(), T0, event)  # type: ignore[arg-type]


def _requested(site: str = "site1") -> JobRequested:
    return JobRequested(job_type="noop", site_id=site, user_id="u1")


def test_a_legal_history_has_no_findings_and_an_illegal_one_is_named() -> None:
    a, b = streams.job(str(uuid7())), streams.job(str(uuid7()))
    feed = [
        _recorded(a, 1, 1, _requested()),
        _recorded(b, 1, 2, _requested("site2")),
        _recorded(a, 2, 3, JobStarted(attempt=1)),
        _recorded(a, 3, 4, JobProgressed(progress=50)),
        _recorded(b, 2, 5, JobCancelled(by="u1")),
        _recorded(a, 4, 6, JobCompleted(result=None)),
        _recorded(b, 3, 7, JobCompleted(result=None)),
        _recorded("usage:site1:2026-11", 1, 8, QuotaReserved(job_id="x")),
    ]
    check = HistoryCheck()
    check.check(feed[:4])
    check.check(feed[4:])
    assert [(f.kind, f.where, f.detail) for f in check.report()] == [
        ("illegal_transition", b, "version 3: completed after cancelled")
    ]
    assert check.jobs == 2 and check.events == 7 and check.position == 8

    narrowed = HistoryCheck("site1")
    narrowed.check(feed)
    assert narrowed.report() == [] and narrowed.jobs == 1


def test_gaps_and_histories_without_requested_are_named() -> None:
    a, b = streams.job(str(uuid7())), streams.job(str(uuid7()))
    check = HistoryCheck()
    check.check(
        [
            _recorded(a, 1, 1, _requested()),
            _recorded(a, 3, 2, JobStarted(attempt=1)),
            _recorded(b, 1, 3, JobStarted(attempt=1)),
            _recorded(b, 2, 4, JobStarted(attempt=1)),
        ]
    )
    assert [(f.kind, f.where, f.detail) for f in check.report()] == [
        ("gap", a, "version 3 follows 1"),
        ("illegal_transition", b, "version 1: started before requested"),
        ("illegal_transition", b, "version 2: started before requested"),
    ]
    narrowed = HistoryCheck("site1")
    narrowed.check([_recorded(b, 1, 1, JobStarted(attempt=1))])
    assert narrowed.report() == [], "a stream that names no site is not one of site1's"


def test_findings_past_the_bound_are_counted() -> None:
    check = HistoryCheck(max_findings=3)
    check.check(
        [_recorded(streams.job(str(uuid7())), 1, n, JobStarted(attempt=1)) for n in range(1, 8)]
    )
    found = check.report()
    assert len(found) == 4 and found[-1].detail.startswith("4 more broken rules not listed")


# -- the command on a store the service wrote --------------------------------------------


def test_a_store_the_service_wrote_verifies(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "verify", "--data", str(built.data))
    assert code == 0, out
    assert out.splitlines()[-2:] == [
        "job rules: 4 jobs checked",
        out.splitlines()[-1],
    ]
    assert out.splitlines()[-1].endswith("bytes: ok") and err == ""
    code, out, _ = run_cli(capsys, "verify", "--data", str(built.data), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["findings"] == []
    assert set(report) == {"streams", "events", "bytes", "findings", "jobs", "ok"}
    assert report["jobs"] == 4 and report["events"] > 10 and report["bytes"] > 0


def _append(data: Path, stream: str, events: list[Event]) -> None:
    log = FileLog(data)
    try:
        version = log.stream_version(stream)
        log.append_many([AppendTo(stream, [new(e) for e in events], version)])
    finally:
        log.close()


def test_illegal_transitions_are_named_with_stream_version_and_rule(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    cancelled = streams.job(store.cancelled)
    _append(store.data, cancelled, [JobCompleted(result={"late": True})])
    running = streams.job(str(uuid7()))
    _append(store.data, running, [_requested("site2")])
    _append(store.data, running, [JobStarted(attempt=1)])
    _append(store.data, running, [JobStarted(attempt=2)])

    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data))
    assert code == 1
    errors = [line.split(None, 3) for line in out.splitlines() if line.startswith("error")]
    assert sorted(errors) == sorted(
        [
            ["error", "illegal_transition", cancelled, "version 3: completed after cancelled"],
            ["error", "illegal_transition", running, "version 3: started while running"],
        ]
    )
    assert out.splitlines()[-1].endswith("FAILED")

    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert {
        "severity": "error",
        "kind": "illegal_transition",
        "where": running,
        "detail": "version 3: started while running",
    } in report["findings"]

    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data), "--site", "site2")
    assert code == 1 and cancelled not in out and running in out
    assert "job rules: 2 jobs of site site2 checked" in out
    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data), "--site", "site3")
    assert code == 0, "the rules of site3's jobs hold; the store itself is sound"


def test_a_torn_tail_is_reported_and_is_not_a_failure(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    with (store.data / "feed" / "feed.log").open("ab") as f:
        f.write(b"\x54\x4a\x01\x00\xff\xff\x00\x00" + b"\x00" * 30)  # a header, cut short
    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [(f["severity"], f["kind"], f["where"]) for f in report["findings"]] == [
        ("info", "torn_tail", "feed")
    ]


def test_a_bit_flip_in_a_stream_log_is_damage(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = streams.job(store.completed)
    path = FileLog(store.data, create=False, readonly=True).layout.stream_path(stream)
    flip(path, path.stat().st_size // 2)
    code, out, err = run_cli(capsys, "verify", "--data", str(store.data))
    assert code == 1 and "Traceback" not in err
    assert any(line.split()[:3] == ["error", "damage", stream] for line in out.splitlines())


def test_a_bit_flip_in_the_feed_is_damage_and_the_rules_are_checked_before_it(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = store.data / "feed" / "feed.log"
    flip(feed, feed.stat().st_size // 2)
    code, out, err = run_cli(capsys, "verify", "--data", str(store.data), "--json")
    report = json.loads(out)
    assert code == 1 and "Traceback" not in err
    kinds = {(f["severity"], f["kind"], f["where"]) for f in report["findings"]}
    assert ("error", "damage", "feed") in kinds and ("info", "unchecked", "feed") in kinds


def test_a_lost_feed_is_reported_not_a_crash(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    (store.data / "feed" / "feed.log").unlink()
    code, out, err = run_cli(capsys, "verify", "--data", str(store.data))
    assert code == 1 and "Traceback" not in err
    assert "bad_file" in out and "feed.log" in out


def test_the_parallel_check_finds_what_the_serial_one_does(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(store.data, streams.job(store.cancelled), [JobCompleted(result=None)])
    settings = verify.VerifySettings(store.data)
    serial = verify.check(settings, parallel=False, show_progress=False)
    parallel = verify.check(settings, parallel=True, show_progress=True)
    assert serial == parallel and not serial.ok
    captured = capsys.readouterr()
    assert captured.out == "" and "failed" not in captured.err, "the second process did its part"


def _log_of(store: Built, job: str) -> Path:
    return FileLog(store.data, create=False, readonly=True).layout.stream_path(streams.job(job))


def _cut(path: Path, n: int) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - n)


def _grow(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


DAMAGE: dict[str, Callable[[Built], object]] = {
    "stream log bit flip": lambda s: flip(_log_of(s, s.completed), 100),
    "stream log torn": lambda s: _cut(_log_of(s, s.completed), 7),
    "stream log garbage": lambda s: _grow(_log_of(s, s.completed), b"\x54\x4a\x01"),
    "stream log gone": lambda s: _log_of(s, s.completed).unlink(),
    "stream log of another": lambda s: _log_of(s, s.cancelled).write_bytes(
        _log_of(s, s.other_site).read_bytes()
    ),
    "stray file": lambda s: (s.data / "streams" / "00" / "job.not-a-uuid.log").write_bytes(b""),
    "feed bit flip": lambda s: flip(s.data / "feed" / "feed.log", 1000),
    "feed torn": lambda s: _cut(s.data / "feed" / "feed.log", 5),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_the_parallel_check_finds_what_the_serial_one_does_in_damaged_stores(
    store: Built, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    DAMAGE[damage](store)
    settings = verify.VerifySettings(store.data)
    serial = verify.check(settings, parallel=False, show_progress=False)
    parallel = verify.check(settings, parallel=True, show_progress=False)
    assert serial == parallel
    assert serial.findings, "the damage is found"
    assert "failed" not in capsys.readouterr().err, "the second process did its part"


def test_the_parallel_check_beside_a_live_appender_passes(store: Built) -> None:
    child = _appender(store.data, 300, 2)
    try:
        result = verify.check(verify.VerifySettings(store.data), parallel=True)
        still_running = child.poll() is None
    finally:
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert result.ok, result.findings
    assert still_running, "the appender finished before verify did: make it append more"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--data", "{tmp}/none"], "does not exist"),
        (["--data", "{tmp}"], "not a jobtrail data directory"),
        (["--data", "{built}", "--site", "no sites:here"], "--site"),
        (["--data", "{built}", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_usage_is_exit_2(
    built: Built,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    (tmp_path / "notes.txt").write_text("not a data directory")
    args = [a.format(tmp=tmp_path, built=built.data) for a in argv]
    code, _, err = run_cli(capsys, "verify", *args)
    assert code == 2 and says in err


def test_help_describes_every_flag_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "verify", "--help")
    assert code == 0
    for flag in ("--data", "--json", "--site"):
        assert flag in out
    assert "exit status" in out and "torn tail" in out


# -- beside other processes, and after they crash ----------------------------------------


def _appender(data: Path, jobs: int, seed: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.operator.job_appender", str(data), str(jobs), str(seed)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == "READY\n", line + (child.stderr.read() if child.stderr else "")
    return child


def test_verify_beside_a_live_appender_passes(
    store: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    child = _appender(store.data, 300, 1)
    try:
        code, out, _ = run_cli(capsys, "verify", "--data", str(store.data))
        still_running = child.poll() is None
        assert code == 0, out
        code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
        assert code == 0, out
    finally:
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert still_running, "the appender finished before verify did: make it append more"
    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data), "--json")
    assert code == 0 and json.loads(out)["jobs"] == 4 + 300


def test_verify_after_appenders_are_killed_reports_torn_tails_only(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = copy_of(built, tmp_path)
    kinds: list[str] = []
    rng = random.Random(5)
    for seed in range(6):  # a short crash loop: SIGKILL at a random instant mid-appends
        children = [_appender(store.data, 10_000, seed * 10 + k) for k in range(2)]
        time.sleep(rng.uniform(0.0, 0.1))
        for child in children:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
        code, out, _ = run_cli(capsys, "verify", "--data", str(store.data), "--json")
        report = json.loads(out)
        assert code == 0, report["findings"]
        kinds += [f["kind"] for f in report["findings"]]
        code, out, _ = run_cli(capsys, "replay", "--data", str(store.data))
        assert code == 0, out
    assert set(kinds) <= {"torn_tail", "pending", "set_aside"}
    FileLog(store.data).close()  # a writer recovers what the dead ones left
    code, out, _ = run_cli(capsys, "verify", "--data", str(store.data))
    assert code == 0, out


@pytest.mark.parametrize("damage", ["none", "stream log torn", "stray file"])
@pytest.mark.parametrize("first", ["second process", "this one"])
def test_the_logs_two_processes_share_out_are_the_logs_one_reads(
    store: Built, damage: str, first: str
) -> None:
    """Whichever takes the shards (all, none or some), the joined logs are the same."""
    if damage != "none":
        DAMAGE[damage](store)
    whole = logs_seen(Layout(store.data))
    shared = verify._SharedLogs.start(store.data)
    assert shared is not None
    with shared:
        if first == "second process":
            shared._helper._proc.wait(timeout=60)  # it took every shard and answered
        seen = shared.result()
    assert seen == whole


def test_a_second_process_stopped_half_way_is_ended_and_its_shards_read_here(
    store: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_logs, "LAST_SHARD_SECONDS", 1.0)
    monkeypatch.setattr(shared_logs, "CLAIM_SECONDS", 1.0)  # it may stop holding the lock
    whole = logs_seen(Layout(store.data))
    shared = verify._SharedLogs.start(store.data)
    assert shared is not None
    with shared:
        claims = ShardClaims(f"{shared._dir}/claims")
        deadline = time.monotonic() + 30
        while claims.taken_from_below() < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(shared._helper._proc.pid, signal.SIGSTOP)  # it holds shards, answers nothing
        started = time.monotonic()
        seen = shared.result()
        claims.close()
    assert seen == whole
    assert time.monotonic() - started < 20


def test_a_second_process_that_does_not_answer_in_time_is_ended(tmp_path: Path) -> None:
    sleeper = Partner(LogsSeen, "-n1", "-r1", "import time; time.sleep(60)", module="timeit")
    started = time.monotonic()
    assert sleeper.result(timeout=0.5) is None
    assert time.monotonic() - started < 10
