"""Small builders for store tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eventstore import streams
from eventstore.events import JobProgressed, JobRequested
from eventstore.filestore import FileStore
from eventstore.records import RecordedEvent, uuid7


def job_stream() -> str:
    return streams.job(str(uuid7()))


def requested(site: str = "s1", user: str = "u1", pad: int = 0) -> JobRequested:
    return JobRequested(job_type="noop", site_id=site, user_id=user, params={"pad": "x" * pad})


def progressed(n: int) -> JobProgressed:
    return JobProgressed(progress=n % 101, message=f"step {n}")


def count_feed_reads(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the store's reads of its feed from now on: the function returned tells how many."""
    reads = 0
    real = store.log.read_all

    def counted(from_position: int, limit: int) -> list[RecordedEvent]:
        nonlocal reads
        reads += 1
        return real(from_position, limit)

    monkeypatch.setattr(store.log, "read_all", counted)
    return lambda: reads


REPO = Path(__file__).resolve().parents[2]


def spawn(mode: str, *args: object) -> subprocess.Popen[str]:
    """Start `tests/eventstore/procs.py MODE ARGS` as a real OS process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.eventstore.procs", mode, *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], prefix: str, within: float = 30.0) -> str:
    """Read the child's stdout until a line starting with `prefix` (fails after `within` s)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
    raise AssertionError(
        f"child never printed {prefix!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )
