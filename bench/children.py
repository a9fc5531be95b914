"""Child processes of a benchmark, talking JSON lines over their stdin and stdout.

The parent side bounds every wait and kills what is still running on the way out; the
child side arms an alarm, so a child outlives a lost parent by its time limit at most.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import msgspec

_JSON: Final = msgspec.json.Encoder()
_MESSAGE: Final = msgspec.json.Decoder(dict[str, Any])


class ChildFailed(RuntimeError):
    """A child process exited, said something unreadable, or did not answer in time."""


class Child:
    """The parent's handle on one child process."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.name = name
        self.proc = proc
        self._stdin = proc.stdin
        self._fd = proc.stdout.fileno()
        self._buf = b""

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._stdin.write(_JSON.encode(message) + b"\n")
            self._stdin.flush()
        except BrokenPipeError as exc:
            raise ChildFailed(f"{self.name} exited with {self.proc.poll()}") from exc

    def recv(self, timeout: float) -> dict[str, Any]:
        """The child's next message; ChildFailed if it exits or stays silent for `timeout` s."""
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"{self.name} did not answer within {timeout:.0f} s")
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    code = self.proc.wait(timeout=5)
                    raise ChildFailed(f"{self.name} exited with {code}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return _MESSAGE.decode(line)
        except msgspec.DecodeError as exc:
            raise ChildFailed(f"{self.name} said {line[:200]!r}") from exc


@contextmanager
def spawn(module: str, argvs: Sequence[Sequence[str]], cwd: Path) -> Iterator[list[Child]]:
    """Start `python -m module *argv` for each argv; stop every one of them on the way out.

    Children write their tracebacks to our stderr; stdout is theirs to answer on.
    """
    children: list[Child] = []
    try:
        for i, argv in enumerate(argvs):
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *argv],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            children.append(Child(f"{module} {argv[0] if argv else ''} #{i}", proc))
        yield children
    finally:
        for child in children:
            stop(child.proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Close its stdin (a polite stop), then terminate, then kill: never leave it running."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    for action in (None, proc.terminate, proc.kill):
        if action is not None:
            action()
        try:
            proc.wait(timeout=3 if action is None else 2)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stdout is not None:
        proc.stdout.close()


# -- the child's side -----------------------------------------------------------------


def arm(limit_seconds: float) -> None:
    """Die by SIGALRM after `limit_seconds`, whatever the parent does."""
    signal.alarm(max(1, int(limit_seconds)))


def tell(message: dict[str, Any]) -> None:
    """Send one message to the parent."""
    sys.stdout.buffer.write(_JSON.encode(message) + b"\n")
    sys.stdout.buffer.flush()


def hear() -> dict[str, Any] | None:
    """The parent's next message (blocking); None once the parent closed our stdin."""
    line = sys.stdin.buffer.readline()
    if not line:
        return None
    return _MESSAGE.decode(line)
