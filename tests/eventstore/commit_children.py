"""Finding and scripting commit processes (`eventstore.commit_process`) in tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from eventstore import NO_STREAM, EventStore
from eventstore import commit_process as cp
from tests.eventstore.helpers import job_stream, requested


def commit_children(data: Path, parent: int | None = None) -> list[int]:
    """Pids of live commit processes for `data` (children of `parent`, if given)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" or (parent is not None and int(ppid) != parent):
            continue
        if b"eventstore.commit_process" in cmdline and str(data).encode() in cmdline:
            found.append(int(entry.name))
    return found


async def wait_until(check: Callable[[], bool], within: float = 30.0) -> None:
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - counts and processes, nothing to wait on
            await anyio.sleep(0.01)


READY = (
    "import os, socket, struct, sys, msgspec\n"
    "s = socket.socket(fileno=int(sys.argv[1]))\n"
    "b = msgspec.msgpack.encode((0, [], None))\n"
    "s.sendall(struct.pack('<I', len(b)) + b)\n"
)


NO_FORK = "fork fails"


def scripted_children(monkeypatch: pytest.MonkeyPatch, scripts: list[str | None]) -> list[int]:
    """The n-th child runs scripts[n] (None: the real commit process; NO_FORK: starting
    it fails with OSError); their pids."""
    pids: list[int] = []
    real = cp._spawn

    def fake_spawn(root: Path, theirs: socket.socket) -> subprocess.Popen[bytes]:
        script = scripts[len(pids)] if len(pids) < len(scripts) else None
        if script == NO_FORK:
            pids.append(-1)
            raise OSError(11, "Resource temporarily unavailable")
        if script is None:
            proc = real(root, theirs)
        else:
            fd = theirs.fileno()
            proc = subprocess.Popen([sys.executable, "-c", script, str(fd)], pass_fds=(fd,))
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(cp, "_spawn", fake_spawn)
    return pids


async def started_child(store: EventStore, data: Path) -> int:
    """Append once, which starts the store's commit process; that child's pid."""
    await store.append(job_stream(), [requested()], NO_STREAM)
    [child] = commit_children(data, os.getpid())
    return child
