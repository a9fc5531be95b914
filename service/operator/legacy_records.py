"""Reading the older file-backed job store (seed 002) safely: one checked record per job.

The directory is untrusted input. Every name is checked before it is opened, nothing is
followed through a symbolic link (each open is relative to a directory descriptor, with
`O_NOFOLLOW`), only regular files are read and never more than `MAX_RECORD_BYTES` of one.
A record that cannot be read or checked becomes a `Skipped` with the reason, never an
exception, so one bad file cannot stop the others.

The two formats: `DIR/{job_id}.json` holds the job as one JSON object;
`DIR/{job_id}/events.log` holds one JSON object a line, merged in order (a field of a
later line replaces the same field of an earlier one: the last line wins).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from eventstore.errors import InvalidId
from eventstore.streams import valid_job_id

MAX_RECORD_BYTES: Final = 1 << 20
"""The most of one legacy file that is read; a bigger one is skipped, not truncated."""

EVENTS_LOG: Final = "events.log"

LegacyStatus = Literal["queued", "running", "completed", "failed"]
Format = Literal["json", "events.log"]


class LegacyJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job of the older store, checked: what jobtrail keeps of it."""

    job_id: str  # lowercase UUID
    entry: str  # its name in DIR, for messages
    format: Format
    status: LegacyStatus
    created_at: datetime  # aware, UTC
    updated_at: datetime  # aware, UTC, not before created_at
    progress: int  # 0-100
    result: Any = None
    error_message: str | None = None


class Skipped(msgspec.Struct, frozen=True):
    """An entry of DIR that is not imported, and why."""

    entry: str
    reason: str


class Ignored(msgspec.Struct, frozen=True):
    """A file of DIR that is no job record at all (a README, a lock file): only listed."""

    entry: str


Entry = LegacyJob | Skipped | Ignored


class _Fields(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a legacy job that are used; others are ignored."""

    status: str
    job_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    progress: int | float | None = None
    result: Any = None
    error_message: str | None = None


_STATUSES: Final = frozenset({"queued", "running", "completed", "failed"})
_OBJECT: Final = msgspec.json.Decoder(dict[str, Any])


class BadRecord(Exception):
    """A record that is not imported; the message says why."""


def shown(name: str) -> str:
    """A name of DIR as it may be printed: control characters escaped, at most 100 chars."""
    if name.isprintable() and len(name) <= 100:
        return name
    return repr(name[:100])


class LegacyDirectory:
    """The entries of one legacy store directory, opened once, read one record at a time."""

    def __init__(self, path: Path, now: Callable[[], datetime]) -> None:
        self.path = path
        self._now = now
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._fd)

    def names(self) -> list[str]:
        """Every name in DIR, sorted, so that runs go in the same order."""
        return sorted(os.listdir(self._fd))

    def groups(self) -> Iterator[list[str] | Skipped | Ignored]:
        """The names grouped by the job they name (one or more), or what the name is instead."""
        by_job: dict[str, list[str]] = {}
        for name in self.names():
            what = self._classify(name)
            if isinstance(what, str):
                by_job.setdefault(what, []).append(name)
            else:
                yield what
        yield from by_job.values()

    def read(self, names: list[str]) -> LegacyJob | Skipped:
        """The checked job of a group of names (one name: the usual case)."""
        if len(names) > 1:
            listed = ", ".join(shown(n) for n in names)
            return Skipped(shown(names[0]), f"the job is stored more than once ({listed})")
        name = names[0]
        try:
            if name.endswith(".json"):
                data, mtime = _read_file(self._fd, name)
                fields = _object(data, "the file")
                return _checked(name, "json", fields, mtime, self._now())
            sub = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._fd
            )
            try:
                data, mtime = _read_file(sub, EVENTS_LOG, inside=name)
            finally:
                os.close(sub)
            return _checked(name, "events.log", _merged_lines(data), mtime, self._now())
        except BadRecord as exc:
            return Skipped(shown(name), str(exc))
        except OSError as exc:
            return Skipped(shown(name), f"cannot be read: {exc.strerror or exc}")

    def _classify(self, name: str) -> str | Skipped | Ignored:
        """The job id a name stands for, or why it stands for none."""
        try:
            info = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except OSError as exc:
            return Skipped(shown(name), f"cannot be read: {exc.strerror or exc}")
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            return Skipped(shown(name), "a symbolic link (links are never followed)")
        if stat.S_ISDIR(mode):
            stem, what = name, "directory"
        elif stat.S_ISREG(mode) and name.endswith(".json"):
            stem, what = name[: -len(".json")], "file"
        elif stat.S_ISREG(mode):
            return Ignored(shown(name))
        else:
            return Skipped(shown(name), "neither a regular file nor a directory")
        try:
            return valid_job_id(stem)
        except InvalidId:
            return Skipped(shown(name), f"the {what} name is not a job id (a UUID)")


def _read_file(dir_fd: int, name: str, inside: str | None = None) -> tuple[bytes, float]:
    """At most MAX_RECORD_BYTES of a regular file, and its modification time."""
    where = f"{inside}/{name}" if inside else "the file"
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        raise BadRecord(f"no {where}") from None
    except OSError as exc:
        raise BadRecord(f"{where} cannot be opened: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadRecord(f"{where} is not a regular file")
        if info.st_size > MAX_RECORD_BYTES:
            raise BadRecord(f"{where} is {info.st_size} bytes, over the {MAX_RECORD_BYTES} read")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RECORD_BYTES:
            chunk = os.read(fd, MAX_RECORD_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_RECORD_BYTES:
            raise BadRecord(f"{where} grew over the {MAX_RECORD_BYTES} bytes read")
        return b"".join(chunks), info.st_mtime
    finally:
        os.close(fd)


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        return _OBJECT.decode(data)
    except msgspec.ValidationError:
        raise BadRecord(f"{what} is not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise BadRecord(f"{what} is not valid JSON: {exc}") from None


def _merged_lines(data: bytes) -> dict[str, Any]:
    """The lines of an events.log merged in order: the last line wins, field by field."""
    merged: dict[str, Any] = {}
    lines = 0
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            merged.update(_object(line, f"{EVENTS_LOG} line {number}"))
            lines += 1
    if not lines:
        raise BadRecord(f"{EVENTS_LOG} holds no lines")
    return merged


def _checked(name: str, fmt: Format, raw: dict[str, Any], mtime: float, now: datetime) -> LegacyJob:
    """The fields of a record checked and turned into a LegacyJob; raises BadRecord."""
    try:
        fields = msgspec.convert(raw, _Fields)
    except msgspec.ValidationError as exc:
        raise BadRecord(f"{exc}") from None
    job_id = valid_job_id(name.removesuffix(".json"))
    if fields.job_id is not None and fields.job_id.lower() != job_id:
        raise BadRecord(f"its job_id {shown(fields.job_id)} is not the one of its name")
    if fields.status not in _STATUSES:
        raise BadRecord(f"unknown status {shown(fields.status)}")
    created = _time(fields.created_at, "created_at", now)
    updated = _time(fields.updated_at, "updated_at", now)
    if created is not None and updated is not None and updated < created:
        raise BadRecord("updated_at is before created_at")
    modified = datetime.fromtimestamp(mtime, UTC)
    created = created or updated or min(modified, now)
    updated = updated or max(created, min(modified, now))
    progress = fields.progress if fields.progress is not None else 0
    if not 0 <= progress <= 100:
        raise BadRecord(f"progress {progress!r} is not between 0 and 100")
    return LegacyJob(
        job_id=job_id,
        entry=shown(name),
        format=fmt,
        status=fields.status,  # type: ignore[arg-type]  # checked against _STATUSES
        created_at=created,
        updated_at=updated,
        progress=int(progress + 0.5),  # the old store kept floats; jobtrail an integer
        result=fields.result,
        error_message=fields.error_message,
    )


def _time(value: str | None, field: str, now: datetime) -> datetime | None:
    """An ISO 8601 time of the old store (UTC when it names no offset), not in the future."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadRecord(f"{field} {shown(value)} is not an ISO 8601 time") from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at > now:
        raise BadRecord(f"{field} {value} is in the future")
    return at
