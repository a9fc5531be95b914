"""Retention in the store: `prune` on every backend, then the file store's segments.

The contract part runs on the memory and the file store. The file part checks what a
user of a data directory would: the job's log is gone, the feed files shrink, `verify`
is clean, a reader in another process follows across a rewrite, and a prune killed at
random instants leaves a store that opens, verifies clean and lost no unpruned event.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from eventstore import ANY, NO_STREAM, AppendTo, EventStore, WrongExpectedVersion, new, streams
from eventstore.events import JobCompleted, JobPruned
from eventstore.filelog import FileLog
from eventstore.retention import InvalidPrune
from eventstore.verify import verify
from tests.eventstore.helpers import REPO, job_stream, progressed, requested

SMALL_SEGMENT = 4096


def tombstone(stream: str, site: str = "s1", version: int = 2) -> JobPruned:
    return JobPruned(
        job_id=stream[4:],
        site_id=site,
        user_id="u1",
        job_type="noop",
        status="completed",
        finished_at=datetime.now(UTC),
        last_version=version,
        created_position=0,
    )


def prune_batch(victims: list[str], version: int = 2, site: str = "s1") -> list[AppendTo]:
    stones = [new(tombstone(s, site, version)) for s in victims]
    return [AppendTo(streams.pruned(site), stones, ANY)] + [
        AppendTo(s, [], version) for s in victims
    ]


# -- the contract, on every backend ------------------------------------------------------


@pytest.mark.anyio
async def test_prune_removes_streams_and_leaves_holes(store: EventStore) -> None:
    jobs = [job_stream() for _ in range(6)]
    for s in jobs:
        await store.append(s, [requested()], NO_STREAM)
        await store.append(s, [new(JobCompleted(result=1))], 1)
    before = await store.read_all(1, 1000)
    victims = jobs[::2]
    recorded = await store.prune(prune_batch(victims))
    assert [e.type for e in recorded[0]] == ["job_pruned"] * 3
    assert recorded[0][0].position == 13  # positions are never reused
    for s in victims:
        assert await store.read_stream(s) == []
        assert await store.stream_version(s) == 0
    after = await store.read_all(1, 1000)
    kept = [e for e in before if e.stream not in victims]
    assert after == kept + recorded[0]  # the others unchanged, in place
    assert await store.head() == 15
    # Reading from inside a hole gives the next event after it.
    assert (await store.read_all(1, 1))[0] == kept[0]
    assert (await store.read_all(kept[0].position + 1, 1))[0] == kept[1]
    # The tombstones' stream reads like any other.
    assert await store.read_stream(streams.pruned("s1")) == recorded[0]


@pytest.mark.anyio
async def test_prune_of_a_job_that_moved_on_conflicts_and_removes_nothing(
    store: EventStore,
) -> None:
    a, b = job_stream(), job_stream()
    for s in (a, b):
        await store.append(s, [requested()], NO_STREAM)
        await store.append(s, [new(JobCompleted(result=1))], 1)
    await store.append(b, [progressed(3)], 2)  # b moved on after the pruner read it
    with pytest.raises(WrongExpectedVersion):
        await store.prune(prune_batch([a, b]))
    assert len(await store.read_stream(a)) == 2 and len(await store.read_stream(b)) == 3
    assert await store.read_stream(streams.pruned("s1")) == []


@pytest.mark.anyio
async def test_prune_needs_tombstones_and_exact_versions(store: EventStore) -> None:
    s = job_stream()
    await store.append(s, [requested()], NO_STREAM)
    with pytest.raises(InvalidPrune):
        await store.prune([AppendTo(s, [], 1)])  # no tombstone
    stone = new(tombstone(s, version=1))
    with pytest.raises(InvalidPrune):  # the removed stream without its version check
        await store.prune([AppendTo(streams.pruned("s1"), [stone], ANY)])
    with pytest.raises(InvalidPrune):
        await store.prune([AppendTo(streams.pruned("s1"), [stone], ANY), AppendTo(s, [], ANY)])
    assert len(await store.read_stream(s)) == 1


@pytest.mark.anyio
async def test_a_retried_prune_is_a_no_op(store: EventStore) -> None:
    s = job_stream()
    await store.append(s, [requested()], NO_STREAM)
    await store.append(s, [new(JobCompleted(result=1))], 1)
    batch = prune_batch([s])
    first = await store.prune(batch)
    again = await store.prune(batch)
    assert again == first
    assert [e.type for e in await store.read_all(1, 100)] == ["job_pruned"]


@pytest.mark.anyio
async def test_follow_skips_the_holes(store: EventStore) -> None:
    jobs = [job_stream() for _ in range(4)]
    for s in jobs:
        await store.append(s, [requested()], NO_STREAM)
        await store.append(s, [new(JobCompleted(result=1))], 1)
    await store.prune(prune_batch(jobs[:2]))
    later = job_stream()
    await store.append(later, [requested()], NO_STREAM)
    seen = []
    with anyio.fail_after(10):
        async for e in store.follow(1):
            seen.append(e)
            if e.stream == later:
                break
    kept = [s for s in jobs[2:] for _ in (1, 2)]
    assert [e.stream for e in seen] == [*kept, streams.pruned("s1"), streams.pruned("s1"), later]
    assert [e.position for e in seen] == sorted(e.position for e in seen)


# -- the file store: segments, rewrites, other processes, crashes ------------------------


def build(data: Path, jobs: int, pad: int = 50) -> list[str]:
    """A data directory of small segments holding `jobs` completed jobs (2 events each)."""
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    out = []
    try:
        for i in range(jobs):
            s = job_stream()
            log.append_many([AppendTo(s, [new(requested(pad=pad))], NO_STREAM)])
            log.append_many([AppendTo(s, [new(JobCompleted(result=i))], 1)])
            out.append(s)
    finally:
        log.close()
    return out


def feed_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "feed").glob("*.log"))


def test_prune_deletes_the_log_and_shrinks_the_feed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = build(data, 60)
    segments = sorted((data / "feed").glob("feed*.log"))
    assert len(segments) > 3  # the feed was split while it grew
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    paths = [log.layout.stream_path(s) for s in jobs]
    size = feed_bytes(data)
    victims = jobs[:30]
    log.prune(prune_batch(victims))
    assert not any(p.exists() for p in paths[:30]) and all(p.exists() for p in paths[30:])
    feed = [e for page in log.iter_all() for e in page]
    assert not any(e.stream in victims for e in feed)
    assert len(feed) == 60 + 30
    # 30 jobs of ~200 bytes left, 30 tombstones of ~200 bytes came: the feed shrank.
    assert feed_bytes(data) < size - 30 * 100
    log.close()
    report = verify(data)
    assert report.ok and not report.findings, report.findings
    reopened = FileLog(data, readonly=True)
    assert [e for page in reopened.iter_all() for e in page] == feed
    reopened.close()


def test_a_directory_with_one_feed_file_still_opens_and_prunes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = build(data, 10)  # 10 jobs stay well inside the first segment
    assert sorted(p.name for p in (data / "feed").glob("*.log")) == ["feed.log"]
    log = FileLog(data)  # the default segment size: feed.log is the active segment
    log.prune(prune_batch(jobs[:5]))
    # feed.log held pruned events, so after the tombstones (positions 21-25) landed it
    # was sealed and rewritten, and a segment followed it.
    assert sorted(p.name for p in (data / "feed").glob("*.log")) == [
        "feed-00000000000000000026.log",
        "feed.log",
    ]
    assert not any(e.stream in jobs[:5] for page in log.iter_all() for e in page)
    log.close()
    assert verify(data).ok


def follower(data: str, until: int) -> None:
    """Child: follow the feed read-only, printing positions, until position `until`."""
    log = FileLog(Path(data), readonly=True)
    position = 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = log.read_all(position, 7)  # small pages: many reads across the rewrite
        for e in events:
            print("SEEN", e.position, e.stream, flush=True)
            position = e.position + 1
        if position > until:
            print("DONE", flush=True)
            return
        if not events:
            time.sleep(0.005)
    print("TIMEOUT", flush=True)


def test_a_reader_in_another_process_follows_across_a_rewrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = build(data, 80)
    victims = set(jobs[:40:2])
    log = FileLog(data, segment_bytes=SMALL_SEGMENT)
    head = log.head()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.eventstore.test_prune", "follow", str(data), str(head + 40)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for i in range(20):  # prunes and appends while the child reads
            if i == 5:
                log.prune(prune_batch(sorted(victims)))
            s = job_stream()
            log.append_many([AppendTo(s, [new(requested()), new(progressed(1))], NO_STREAM)])
            time.sleep(0.002)
        out, _ = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    log.close()
    lines = out.splitlines()
    assert lines[-1] == "DONE", lines[-5:]
    seen = [(int(p), s) for _, p, s in (line.split() for line in lines[:-1])]
    positions = [p for p, _ in seen]
    assert positions == sorted(set(positions))  # once each, in order
    feed = {e.position for e in FileLog(data, readonly=True).read_all(1, 10_000)}
    assert {p for p in feed if p <= head + 40} <= set(positions)  # each one still there seen


def pruner(data: str, jobs_file: str) -> None:
    """Child: prune the listed jobs in batches of 3, printing each batch once it returned."""
    log = FileLog(Path(data), segment_bytes=SMALL_SEGMENT)
    jobs = json.loads(Path(jobs_file).read_text())
    print("READY", flush=True)
    for i in range(0, len(jobs), 3):
        log.prune(prune_batch(jobs[i : i + 3]))
        print("PRUNED", *jobs[i : i + 3], flush=True)
    log.close()
    print("DONE", flush=True)


def test_sigkill_of_a_prune_at_random_instants_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("JOBTRAIL_PRUNE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    base = tmp_path / "base"
    jobs = build(base, 150, pad=300)
    victims = jobs[:90]
    jobs_file = tmp_path / "victims.json"
    jobs_file.write_text(json.dumps(victims))
    started = time.monotonic()
    for i in range(20):
        if time.monotonic() - started > 120:
            break
        where = f"iteration {i}, seed {seed} (JOBTRAIL_PRUNE_SEED)"
        data = tmp_path / f"data{i}"
        shutil.copytree(base, data)
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.eventstore.test_prune", "prune", data, jobs_file],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        pruned_lines = [line.split()[1:] for line in out.splitlines() if line.startswith("PRUNED")]
        acknowledged = {s for line in pruned_lines for s in line}
        log = FileLog(data, segment_bytes=SMALL_SEGMENT)  # a writer: recovery runs
        log.close()
        report = verify(data)
        assert report.ok, f"{where}: {report.findings}"
        log = FileLog(data, readonly=True)
        feed = [e for page in log.iter_all() for e in page]
        gone = {f"job:{e.event.job_id}" for e in feed if isinstance(e.event, JobPruned)}
        assert acknowledged <= gone, where
        for s in jobs:
            events = log.read_stream(s)
            if s in gone:
                assert events == [], where
            else:  # not pruned: whole, in its log and in the feed
                assert [e.version for e in events] == [1, 2], where
                assert [e for e in feed if e.stream == s] == events, where
        log.close()
        # A later prune finishes what the dead one left: no pruned event stays in the feed.
        log = FileLog(data, segment_bytes=SMALL_SEGMENT)
        rest = [s for s in victims if s not in gone]
        if rest:
            log.prune(prune_batch(rest))
        else:
            log.compact()
        log.close()
        log = FileLog(data, readonly=True)
        streams_in_feed = {e.stream for page in log.iter_all() for e in page}
        log.close()
        assert not streams_in_feed & set(victims), where
        assert verify(data).ok, where
        shutil.rmtree(data)


if __name__ == "__main__":
    if sys.argv[1] == "follow":
        follower(sys.argv[2], int(sys.argv[3]))
    else:
        pruner(sys.argv[2], sys.argv[3])
