"""Child processes for the multi-process store tests: `python -m tests.eventstore.procs MODE ...`.

Each prints one line per fact the parent checks, flushed at once, so whatever was
printed before a SIGKILL is what the parent knows was acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path

from eventstore import streams
from eventstore.errors import StorageError, WrongExpectedVersion
from eventstore.events import JobProgressed, JobRequested, QuotaReserved
from eventstore.filelog import FileLog
from eventstore.records import AppendTo, new, uuid7


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def race_one(data: str, stream: str, count: int) -> None:
    """Append `count` events to one shared stream, re-reading the version on conflicts."""
    log = FileLog(Path(data))
    won = 0
    while won < count:
        version = log.stream_version(stream)
        try:
            r = log.append_many([AppendTo(stream, [new(JobProgressed(progress=1))], version)])
        except WrongExpectedVersion:
            continue
        say("WON", r[0][0].version, r[0][0].id)
        won += 1
    log.close()


def many(data: str, count: int, threads: int) -> None:
    """Create `count` streams from `threads` threads at once; print each position."""
    log = FileLog(Path(data))

    def work() -> None:
        for _ in range(count // threads):
            s = streams.job(str(uuid7()))
            r = log.append_many([AppendTo(s, [new(_requested()), new(_progress(1))], 0)])
            say("POS", *(e.position for e in r[0]))

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.close()


def crash_appender(data: str, seed: int, threads: int) -> None:
    """Append forever from several threads until killed: single and multi-stream appends.

    TRY lists every event id of an append before it is submitted; ACK follows once it is
    acknowledged. Some events are large so that a kill tears them mid-write.
    """
    rng = random.Random(seed)
    log = FileLog(Path(data))
    say("READY")
    site = f"site{seed % 3}"

    def work(k: int) -> None:
        r = random.Random(seed * 100 + k)
        own = streams.job(str(uuid7()))
        version = 0
        while True:
            size = r.choice([10, 100, 4000, 70_000])
            if r.random() < 0.3:
                job = streams.job(str(uuid7()))
                usage = streams.usage(site, "2026-11")
                events = [new(_requested(pad=size))], [new(QuotaReserved(job_id=job[4:]))]
                batch = [AppendTo(job, events[0], 0), AppendTo(usage, events[1], -1)]
            else:
                ev = _requested(pad=size) if version == 0 else _progress(version, pad=size)
                batch = [AppendTo(own, [new(ev)], version)]
            ids = [(a.stream, e.id) for a in batch for e in a.events]
            say("TRY", json.dumps(ids))
            try:
                log.append_many(batch)
            except StorageError as exc:
                say("ERR", repr(exc))
                return
            say("ACK", json.dumps(ids))
            if len(batch) == 1:
                version += 1

    for k in range(threads):
        threading.Thread(target=work, args=(k,), daemon=True).start()
    time.sleep(rng.uniform(5, 10))  # the parent kills us long before this


def follower(data: str, start: int, until: int) -> None:
    """Follow the feed from `start` and print every position until `until` is seen."""
    import anyio

    from eventstore.filestore import open_file_store

    async def run() -> None:
        async with open_file_store(data, create=False, rescan_seconds=0.3) as store:
            say("READY")
            async for e in store.follow(start):
                say("SAW", e.position, e.id)
                if e.position >= until:
                    return

    anyio.run(run)


def fsync_fails(data: str, fail_at: int) -> None:
    """Append one event at a time; the `fail_at`-th fdatasync raises EIO."""
    calls = 0

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls >= fail_at:
            raise OSError(5, "Input/output error (injected)")
        os.fdatasync(fd)

    log = FileLog(Path(data), fsync=fsync)
    s = streams.job(str(uuid7()))
    for version in range(1000):
        e = new(_requested() if version == 0 else _progress(version))
        log.append_many([AppendTo(s, [e], version)])
        say("ACK", s, e.id)


def disk_full(data: str, limit: int) -> None:
    """Append until the file size limit (a full disk for this process) stops the feed."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = FileLog(Path(data))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    s = streams.job(str(uuid7()))
    version = 0
    failures = 0
    while failures < 3:
        e = new(_requested(pad=3000) if version == 0 else _progress(version, pad=3000))
        try:
            log.append_many([AppendTo(s, [e], version)])
        except StorageError as exc:
            failures += 1
            say("ERR", str(exc).replace("\n", " "))
            continue
        version += 1
        say("ACK", s, e.id)
    log.close()


def commit_process_parent(data: str) -> None:
    """Open a store whose appends a commit process makes, append, name the child, wait."""
    import anyio

    from eventstore.filestore import open_file_store
    from tests.eventstore.commit_children import commit_children

    async def run() -> None:
        async with open_file_store(data, commit_process=True) as store:
            s = streams.job(str(uuid7()))
            await store.append_many([AppendTo(s, [new(_requested())], 0)])
            for pid in commit_children(Path(data), os.getpid()):
                say("CHILD", pid)
            await anyio.sleep(60)  # the parent kills us long before this

    anyio.run(run)


def _requested(pad: int = 0) -> JobRequested:
    return JobRequested(job_type="noop", site_id="s1", user_id="u1", params={"pad": "x" * pad})


def _progress(n: int, pad: int = 0) -> JobProgressed:
    return JobProgressed(progress=n % 101, message="x" * pad)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "race-one":
        race_one(args[0], args[1], int(args[2]))
    elif mode == "many":
        many(args[0], int(args[1]), int(args[2]))
    elif mode == "crash":
        crash_appender(args[0], int(args[1]), int(args[2]))
    elif mode == "follow":
        follower(args[0], int(args[1]), int(args[2]))
    elif mode == "fsync-fails":
        fsync_fails(args[0], int(args[1]))
    elif mode == "commit-process-parent":
        commit_process_parent(args[0])
    elif mode == "disk-full":
        disk_full(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
