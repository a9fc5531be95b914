"""Job listings per site and per user, newest first, paged by an opaque cursor.

Each index is two parallel arrays (positions of `requested`, job ids) in feed order, so adding
a job is an append and a page is a bisect to the cursor, then a walk backwards that reads the
job views for the status filter: O(page + skipped). There are indexes per site, per user, and
per type of each, so a type filter skips nothing. Statuses change, so they are not indexed.
"""

from __future__ import annotations

import base64
import binascii
from array import array
from bisect import bisect_left
from collections.abc import Collection
from typing import Final

import msgspec

from eventstore import streams
from eventstore.errors import JobtrailError
from eventstore.events import JobPruned, JobRequested
from eventstore.records import RecordedEvent
from projections.jobs import JobTable, JobView

DEFAULT_PAGE_LIMIT: Final = 50


class InvalidCursor(JobtrailError):
    """A listing cursor that this service did not hand out."""

    code = "ValidationError"
    status = 422


def encode_cursor(position: int) -> str:
    """The cursor that continues after (older than) the job requested at `position`."""
    return base64.urlsafe_b64encode(str(position).encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> int:
    """The position a cursor continues after; InvalidCursor unless `encode_cursor` made it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = int(raw.decode("ascii")) if raw.isdigit() else 0
    except (binascii.Error, ValueError):
        position = 0
    if position < 1 or encode_cursor(position) != cursor:
        raise InvalidCursor("cursor is malformed: pass back a next_cursor unchanged")
    return position


class ListingPage(msgspec.Struct, frozen=True):
    """One page, newest first; `next_cursor` is None on the last page."""

    jobs: list[JobView]
    next_cursor: str | None

    @property
    def count(self) -> int:
        return len(self.jobs)


IndexKey = tuple[str, str | None, str | None]
"""(site, user or None for the whole site, job type or None for every type)."""


class _Index:
    __slots__ = ("ids", "positions")

    def __init__(self, positions: array[int] | None = None, ids: list[str] | None = None) -> None:
        self.positions: array[int] = positions if positions is not None else array("q")
        self.ids: list[str] = ids if ids is not None else []

    def add(self, position: int, job_id: str) -> None:
        if not self.positions or position > self.positions[-1]:
            self.positions.append(position)  # the feed is in order: the O(1) case
            self.ids.append(job_id)
            return
        i = bisect_left(self.positions, position)
        if i == len(self.positions) or self.positions[i] != position:
            self.positions.insert(i, position)
            self.ids.insert(i, job_id)

    def remove(self, position: int, job_id: str) -> None:
        i = bisect_left(self.positions, position)
        if i < len(self.positions) and self.positions[i] == position and self.ids[i] == job_id:
            del self.positions[i]
            del self.ids[i]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Index)
            and self.positions == other.positions
            and self.ids == other.ids
        )

    __hash__ = None  # type: ignore[assignment]


class _IndexState(msgspec.Struct, frozen=True, array_like=True):
    site_id: str
    user_id: str | None
    job_type: str | None
    positions: bytes  # array("q"), machine byte order: a checkpoint stays on its machine
    ids: list[str]


class _PackedIndex(msgspec.Struct, frozen=True, array_like=True):
    site_id: str
    user_id: str | None
    job_type: str | None
    positions: bytes  # array("q"), machine byte order
    ids: bytes  # array("i") of indexes into `_Packed.ids`


class _Packed(msgspec.Struct, frozen=True, array_like=True):
    ids: list[str]  # every job id of the indexes, once
    indexes: list[_PackedIndex]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(list[_IndexState])
_PACKED: Final = msgspec.msgpack.Decoder(_Packed)


class JobListings:
    """Indexes of job ids by site, user and type; reads `jobs` for status and the views."""

    name = "listings"
    folds: Final = (JobRequested, JobPruned)
    """The only event types `apply` folds: a fold over the feed may skip the others."""

    def __init__(self, jobs: JobTable) -> None:
        self._jobs = jobs
        self._indexes: dict[IndexKey, _Index] = {}

    def apply(self, recorded: RecordedEvent) -> None:
        """Index a `requested` event, unindex a pruned job; others change no listing."""
        event = recorded.event
        if isinstance(event, JobPruned):
            self._forget(event)
            return
        job_id = streams.job_id_of(recorded.stream)
        if not isinstance(event, JobRequested) or job_id is None:
            return
        # A second `requested` of a job (an illegal history) is indexed too, but `page`
        # only shows an entry whose position is the job's `created_position`.
        site, user, kind = event.site_id, event.user_id, event.job_type
        for key in ((site, None, None), (site, user, None), (site, None, kind), (site, user, kind)):
            index = self._indexes.get(key)
            if index is None:
                index = self._indexes[key] = _Index()
            index.add(recorded.position, job_id)

    def _forget(self, event: JobPruned) -> None:
        """Take a pruned job out, as a rebuild that never sees its `requested` would have it."""
        site, user, kind = event.site_id, event.user_id, event.job_type
        for key in ((site, None, None), (site, user, None), (site, None, kind), (site, user, kind)):
            index = self._indexes.get(key)
            if index is None:
                continue
            index.remove(event.created_position, event.job_id)
            if not index.positions:
                del self._indexes[key]

    def page(
        self,
        site_id: str,
        *,
        user_id: str | None = None,
        statuses: Collection[str] | None = None,
        job_type: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
    ) -> ListingPage:
        """Up to `limit` jobs of a site (or of one user in it), newest first, after `cursor`."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if isinstance(statuses, str):
            statuses = (statuses,)  # one status, not the letters of one
        before = decode_cursor(cursor) if cursor is not None else None
        index = self._indexes.get((site_id, user_id, job_type))
        if index is None:
            return ListingPage([], None)
        positions, ids = index.positions, index.ids
        i = bisect_left(positions, before) if before is not None else len(positions)
        jobs: list[JobView] = []
        while i > 0:
            i -= 1
            view = self._jobs.get(ids[i])
            if view is None or view.created_position != positions[i]:
                continue
            if statuses is not None and view.status not in statuses:
                continue
            if len(jobs) == limit:  # one more match exists: this page is not the last
                return ListingPage(jobs, encode_cursor(jobs[-1].created_position))
            jobs.append(view)
        return ListingPage(jobs, None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobListings) and self._indexes == other._indexes

    __hash__ = None  # type: ignore[assignment]

    def dump(self) -> bytes:
        return _ENCODER.encode(
            [
                _IndexState(site, user, kind, index.positions.tobytes(), index.ids)
                for (site, user, kind), index in self._indexes.items()
            ]
        )

    def load(self, data: bytes) -> None:
        """Load a dump; load the job table first, so that both share each job id string."""
        indexes: dict[IndexKey, _Index] = {}
        for s in _DECODER.decode(data):
            positions = array("q")
            positions.frombytes(s.positions)
            indexes[(s.site_id, s.user_id, s.job_type)] = _Index(positions, self._shared(s.ids))
        self._indexes = indexes

    def pack(self) -> bytes:
        """The state for `unpack` in another process of this machine: each job id once.

        A job is in four indexes (site, user, type, both), so `load` decodes and looks up
        every id four times (0.5 s for 170,000 jobs); `unpack` does so once per job.
        """
        number: dict[str, int] = {}
        indexes = []
        for (site, user, kind), index in self._indexes.items():
            ids = array("i", [number.setdefault(job_id, len(number)) for job_id in index.ids])
            indexes.append(_PackedIndex(site, user, kind, index.positions.tobytes(), ids.tobytes()))
        return _ENCODER.encode(_Packed(list(number), indexes))

    def unpack(self, data: bytes) -> None:
        """Load a `pack`; load the job table first, as for `load`."""
        packed = _PACKED.decode(data)
        ids = self._shared(packed.ids)
        indexes: dict[IndexKey, _Index] = {}
        for s in packed.indexes:
            positions, numbers = array("q"), array("i")
            positions.frombytes(s.positions)
            numbers.frombytes(s.ids)
            if len(numbers) != len(positions):
                raise msgspec.DecodeError("a packed listing index is damaged")
            indexes[(s.site_id, s.user_id, s.job_type)] = _Index(
                positions, [ids[n] for n in numbers]
            )
        self._indexes = indexes

    def _shared(self, ids: list[str]) -> list[str]:
        out = []
        for job_id in ids:
            view = self._jobs.get(job_id)
            out.append(view.job_id if view is not None else job_id)
        return out
