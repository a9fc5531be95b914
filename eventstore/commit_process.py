"""Group commit in a child process, for the appends of an event loop under load.

Why a process: a committer thread shares the GIL with the event loop. Each of its system
calls (a new stream's `stat`, `open`, `write` and `close`, the `fdatasync`) lets the GIL
go and then waits for the busy loop to let it go again, so under HTTP load a commit
crawls from one call to the next (docs/performance.md, "HTTP service"). A child has an
interpreter of its own: the loop hands its appends over with one write on a socketpair
per loop iteration and takes the answers with one read.

The child is one more appender on the data directory, as a second `serve` process is:
the feed lock, recovery and stream versions work across processes as they always do. It
answers every append it took, in order, and ends when its socket reaches end of file
(the parent closed it, or died). It ignores SIGINT and SIGTERM: a Ctrl-C reaches the
whole process group, and the parent, shutting down, still needs its last appends.

A failed fdatasync stops the child with exit status 70 without answering, as it would
stop a process committing for itself (filelog.die); the parent then stops too. When a
child dies otherwise (SIGKILL, out of memory), a new one is started and the appends the
dead one held are sent to it once more: the store's event ids make that safe (an append
already made is answered with what was recorded). An append that cannot be answered so
fails with OutcomeUnknown, never as "nothing was written": one held by two children that
both died, by a child no successor could be started for, or by a child the closing store
had to kill.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, cast

import anyio
import msgspec

import eventstore
from eventstore.errors import (
    CorruptionError,
    InvalidId,
    JobtrailError,
    OutcomeUnknown,
    StorageError,
    StoreClosed,
    WrongExpectedVersion,
)
from eventstore.filelog import MAX_BATCH, EventTooLarge, FileLog, Request
from eventstore.planning import DuplicateEventIds
from eventstore.records import AppendTo, RecordedEvent
from eventstore.retention import InvalidPrune

log = logging.getLogger("jobtrail.store")

FATAL_STATUS: Final = 70  # filelog.die's: a failed fdatasync
START_SECONDS: Final = 60.0  # opening the log may run recovery first
STOP_SECONDS: Final = 30.0
_READY: Final = 0  # the sequence number of the child's first message: the log is open

_LENGTH: Final = struct.Struct("<I")

# An append: its sequence number and its batch. An answer: the sequence number and the
# recorded events, or an error as its class name and arguments.
_Append = tuple[int, list[AppendTo]]
_Error = tuple[str, list[Any]]
_Answer = tuple[int, list[list[RecordedEvent]] | None, _Error | None]

_ERRORS: Final[dict[str, type[JobtrailError]]] = {
    cls.__name__: cls
    for cls in (
        InvalidId,
        StorageError,
        CorruptionError,
        StoreClosed,
        EventTooLarge,
        InvalidPrune,
        DuplicateEventIds,
    )
}


def error_to_wire(exc: BaseException) -> _Error:
    if isinstance(exc, WrongExpectedVersion):
        return ("WrongExpectedVersion", [exc.stream, exc.expected, exc.actual])
    return (type(exc).__name__, [str(exc)])


def error_from_wire(error: _Error) -> JobtrailError:
    """The error the child met, as the same class where it is one of the store's own."""
    name, args = error
    try:
        if name == "WrongExpectedVersion":
            stream, expected, actual = args
            return WrongExpectedVersion(str(stream), int(expected), int(actual))
        cls = _ERRORS.get(name, StorageError)
        return cls(*(str(a) for a in args))
    except (TypeError, ValueError):
        return StorageError(f"{name}: {args!r}")


class Frames:
    """Length-prefixed msgpack messages taken out of a byte stream as they complete."""

    def __init__(self, decoder: msgspec.msgpack.Decoder[Any]) -> None:
        self._decoder = decoder
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        out = []
        at = 0
        while len(buffer) - at >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, at)
            end = at + _LENGTH.size + size
            if len(buffer) < end:
                break
            out.append(self._decoder.decode(memoryview(buffer)[at + _LENGTH.size : end]))
            at = end
        del buffer[:at]
        return out


def frame(encoded: bytes) -> bytes:
    return _LENGTH.pack(len(encoded)) + encoded


# -- the parent's side ----------------------------------------------------------------


class CommitProcess(asyncio.Protocol):
    """The event loop's end: appends go out in one write per loop iteration, each
    answered when the child has made it durable."""

    def __init__(self, root: Path, on_fatal: Callable[[BaseException], NoReturn]) -> None:
        self._root = root
        self._on_fatal = on_fatal
        self._loop = asyncio.get_running_loop()
        self._encoder = msgspec.msgpack.Encoder()
        self._frames = Frames(msgspec.msgpack.Decoder(_Answer))
        self._proc: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._ready: asyncio.Future[None] | None = None
        self._waiting: dict[int, _Waiting] = {}
        self._lost: list[_Waiting] = []  # held by a child that died: sent again once
        self._outgoing: list[bytes] = []
        self._flush_soon = False
        self._seq = 0
        self._closed = False
        self._starting = asyncio.Lock()
        self._ended: list[asyncio.Future[None]] = []
        self._restarts: set[asyncio.Task[None]] = set()

    async def submit(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        if self._transport is None or self._transport.is_closing():
            await self._start()
        self._seq += 1
        encoded = self._encoder.encode((self._seq, list(batch)))
        waiting = _Waiting(self._seq, encoded, self._loop.create_future())
        self._send(waiting)
        _, recorded, error = await waiting.answer
        if error is not None:
            raise error_from_wire(error)
        assert recorded is not None
        return recorded

    async def aclose(self) -> None:
        """Let the child answer what it holds, then end it (end of file on its socket).

        A child that does not end within STOP_SECONDS (hung, stopped) is killed; what it
        held, and what a dead child held, fails as of unknown outcome."""
        self._closed = True
        for task in list(self._restarts):
            task.cancel()
        async with self._starting:  # a child being started is started, or not, first
            transport, proc = self._transport, self._proc
            if transport is not None and not transport.is_closing():
                self._flush()
                ended: asyncio.Future[None] = self._loop.create_future()
                self._ended.append(ended)
                transport.write_eof()
                with anyio.move_on_after(STOP_SECONDS):
                    await ended
                if ended.done():
                    transport.close()
                else:  # hung: its buffered appends would keep close() waiting forever
                    transport.abort()
                    if proc is not None:
                        proc.kill()
            held = sorted(self._waiting.values(), key=lambda w: w.seq)
            self._waiting.clear()
            self._fail(held + self._lost, OutcomeUnknown(CLOSED))
            if proc is not None:
                await anyio.to_thread.run_sync(_reap, proc)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for answer in self._frames.feed(data):
            seq = answer[0]
            if seq == _READY:
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                continue
            waiting = self._waiting.pop(seq, None)
            if waiting is not None and not waiting.answer.done():
                waiting.answer.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        """The child is gone. What it held is sent once more to the next child: every
        event carries its id, so an append the dead child had made durable is answered
        with what it recorded, and one it had not is made now."""
        self._transport = None
        held = sorted(self._waiting.values(), key=lambda w: w.seq)
        self._waiting.clear()
        self._outgoing.clear()
        twice = [w for w in held if w.sent > 1]
        self._fail(twice, OutcomeUnknown(LOST))
        self._lost += [w for w in held if w.sent == 1]
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(StorageError("the commit process did not start"))
        for ended in self._ended:
            if not ended.done():
                ended.set_result(None)
        if not self._closed:  # reaped now: no zombie, and a failed fsync stops us now
            task = self._loop.create_task(self._restart() if self._lost else self._reap_dead())
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    # -- inside ------------------------------------------------------------------------

    def _send(self, waiting: _Waiting) -> None:
        waiting.sent += 1
        self._waiting[waiting.seq] = waiting
        self._outgoing.append(frame(waiting.encoded))
        if not self._flush_soon:  # appends of this loop iteration leave in one write
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._outgoing and self._transport is not None:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    async def _restart(self) -> None:
        try:
            await self._start()
        except StorageError:
            pass  # _start failed what was lost; the next append tries again

    async def _reap_dead(self) -> None:
        """A child that ended with nothing to send again; the next append starts one."""
        async with self._starting:
            alive = self._transport is not None and not self._transport.is_closing()
            if not self._closed and not alive:
                await self._reap_last()

    async def _reap_last(self) -> None:
        """Under the start lock: reap the last child; after a failed fsync, stop."""
        if self._proc is None:
            return
        status = await anyio.to_thread.run_sync(_reap, self._proc)
        self._proc = None
        if status == FATAL_STATUS:  # no process may append after a failed fsync
            reason = StorageError("the commit process stopped after a failed fsync")
            self._fail(self._lost, OutcomeUnknown(f"{reason}: {LOST_ONE}"))
            self._on_fatal(reason)
        log.warning("the commit process ended with status %s", status)

    async def _start(self) -> None:
        """A new child, once the last one is reaped (after a failed fsync: stop), then
        what the last one held."""
        async with self._starting:
            if self._closed:
                raise StoreClosed("store is closed")
            if self._transport is not None and not self._transport.is_closing():
                return
            await self._reap_last()
            if self._closed:  # closed while the last one was reaped: no new child
                raise StoreClosed("store is closed")
            try:
                await self._spawn_child()
            except StorageError as exc:
                self._fail(self._lost, OutcomeUnknown(f"{exc}: {LOST_ONE}"))
                raise
            lost, self._lost = self._lost, []
            for waiting in lost:
                self._send(waiting)

    async def _spawn_child(self) -> None:
        try:
            ours, theirs = socket.socketpair()
        except OSError as exc:
            raise StorageError(f"the commit process did not start: {exc}") from None
        try:
            self._proc = _spawn(self._root, theirs)
        except OSError as exc:  # fork or exec failed (out of memory, of processes)
            ours.close()
            raise StorageError(f"the commit process did not start: {exc}") from None
        finally:
            theirs.close()
        # A dead child may have left half an answer: nothing of it is read on.
        self._frames = Frames(msgspec.msgpack.Decoder(_Answer))
        self._ready = self._loop.create_future()
        # A start cancelled before it awaits `_ready` (the store closing) leaves nobody to
        # read the failure connection_lost may set there: asyncio would log it as lost.
        self._ready.add_done_callback(_observe)
        try:
            await self._loop.create_connection(lambda: self, sock=ours)
            with anyio.fail_after(START_SECONDS):
                await self._ready
        except (TimeoutError, OSError):
            self._proc.kill()
            if self._transport is not None:
                self._transport.abort()
            else:
                ours.close()
            raise StorageError("the commit process did not start") from None
        if self._transport is None:  # ready, and gone before this task resumed
            raise StorageError("the commit process ended as it started")

    @staticmethod
    def _fail(waiting: list[_Waiting], error: BaseException) -> None:
        for w in waiting:
            if not w.answer.done():
                w.answer.set_exception(error)
        waiting.clear()


LOST: Final = "two commit processes ended with this append in hand: it may or may not be made"
LOST_ONE: Final = "a commit process ended with this append in hand: it may or may not be made"
CLOSED: Final = (
    "the store closed with this append in a commit process's hand: it may or may not be made"
)


@dataclass(slots=True, eq=False)
class _Waiting:
    """An append handed to the child and not answered yet."""

    seq: int
    encoded: bytes
    answer: asyncio.Future[_Answer]
    sent: int = 0


def _observe(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _spawn(root: Path, theirs: socket.socket) -> subprocess.Popen[bytes]:
    package_parent = str(Path(eventstore.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}
    fd = theirs.fileno()
    return subprocess.Popen(
        [sys.executable, "-m", "eventstore.commit_process", str(root), str(fd)],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- the child's side -----------------------------------------------------------------


def serve(root: Path, sock: socket.socket) -> None:
    """Commit what arrives, in order and in batches, until end of file."""
    file_log = FileLog(root, create=False)
    encoder = msgspec.msgpack.Encoder()
    frames = Frames(msgspec.msgpack.Decoder(_Append))
    try:
        sock.sendall(frame(encoder.encode((_READY, [], None))))
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return
            appends = frames.feed(data + _rest(sock))
            for start in range(0, len(appends), MAX_BATCH):
                chunk = appends[start : start + MAX_BATCH]
                requests = [Request(batch) for _, batch in chunk]
                file_log.commit(requests)
                answers = [
                    frame(encoder.encode(_answer(seq, request)))
                    for (seq, _), request in zip(chunk, requests, strict=True)
                ]
                sock.sendall(b"".join(answers))
    finally:
        file_log.close()


def _rest(sock: socket.socket) -> bytes:
    """What else has arrived already, so it joins this commit."""
    parts = []
    while True:
        try:
            data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not data:
            break
        parts.append(data)
    return b"".join(parts)


def _answer(seq: int, request: Request) -> _Answer:
    if request.error is not None:
        return (seq, None, error_to_wire(request.error))
    return (seq, request.result, None)


def main(argv: Sequence[str]) -> None:
    root, fd = argv
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with socket.socket(fileno=int(fd)) as sock:
        try:
            serve(Path(root), sock)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the parent is gone: nobody is waiting for the answers


if __name__ == "__main__":
    main(sys.argv[1:])
