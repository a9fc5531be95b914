"""The worker's view of the store: which jobs are due, in which order, and whose lease ran out.

A projection like any other (the worker's `ProjectionRunner` feeds it the store's events):
it folds every job with the job table's own fold, and keeps three heaps beside it:

- per site, the jobs that may start: highest priority first, then oldest first;
- the jobs waiting for a retry, by `next_attempt_at`, moved into their site's heap once due;
- the running jobs, by `lease_expires_at`, for taking over a job whose worker died.

Heap entries are never removed; an entry is checked against the job's current view when it
comes up and dropped if the job moved on, so a change costs one push, not a search.

Fairness: `next_ready` looks at the best job of every site and, among the sites whose best
job has the top priority, takes the one served longest ago, so one site's 10,000 queued
jobs cannot starve another site's one job.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Iterator
from datetime import datetime, timedelta

from eventstore.events import JobCancelRequested, JobLeaseRenewed, JobStarted
from eventstore.records import RecordedEvent
from projections.jobs import JobTable, JobView, awaiting_retry

ReadyKey = tuple[int, int, str, int]  # (-priority, created position, job id, version)
TimedKey = tuple[datetime, str, int]  # (when, job id, version or attempt)

LEASE_RECHECK = timedelta(seconds=1)
"""How soon a run-out lease of a job still in this worker's hands is looked at again."""


class WorkQueue:
    """Due jobs by priority, age and site; retries by due time; leases by expiry."""

    name = "work_queue"

    def __init__(
        self,
        job_types: Collection[str],
        *,
        on_change: Callable[[], None] = lambda: None,
        on_cancel_requested: Callable[[JobView], None] = lambda view: None,
    ) -> None:
        self.jobs = JobTable()
        self._types = frozenset(job_types)
        self._on_change = on_change
        self._on_cancel_requested = on_cancel_requested
        self._ready: dict[str, list[ReadyKey]] = {}
        self._delayed: list[TimedKey] = []
        self._leases: list[TimedKey] = []
        self._turn = itertools.count(1)
        self._served: dict[str, int] = {}

    def apply(self, recorded: RecordedEvent) -> JobView | None:
        view = self.jobs.apply(recorded)
        if view is None or view.job_type not in self._types:
            return view
        if view.status == "pending":
            if awaiting_retry(view):
                return view  # `retried` follows in the same append
            if view.next_attempt_at is None:
                self._push_ready(view)
            else:
                heapq.heappush(self._delayed, (view.next_attempt_at, view.job_id, view.version))
            self._on_change()
        elif view.status == "running":
            # Every event of a running job re-arms its lease check, not only claims and
            # renewals: a takeover that lost the race to a `cancel_requested` or a last
            # `progressed` is then tried again on the job as it is now.
            if view.lease_expires_at is not None:
                heapq.heappush(self._leases, (view.lease_expires_at, view.job_id, view.attempt))
                if isinstance(recorded.event, JobStarted | JobLeaseRenewed):
                    self._on_change()
            if view.cancel_requested and isinstance(recorded.event, JobCancelRequested):
                self._on_cancel_requested(view)
        return view

    def requeue(self, view: JobView, at: datetime) -> None:
        """Offer a job taken by `next_ready` again from `at`: its claim did not land."""
        heapq.heappush(self._delayed, (at, view.job_id, view.version))
        self._on_change()

    def recheck_lease(self, view: JobView, at: datetime) -> None:
        """Look at a lease taken by `expired` again at `at`: its takeover did not land."""
        heapq.heappush(self._leases, (at, view.job_id, view.attempt))
        self._on_change()

    def _push_ready(self, view: JobView) -> None:
        heap = self._ready.setdefault(view.site_id, [])
        heapq.heappush(heap, (-view.priority, view.created_position, view.job_id, view.version))

    def _current(self, job_id: str, version: int) -> JobView | None:
        view = self.jobs.get(job_id)
        return view if view is not None and view.version == version else None

    def _release_due(self, now: datetime) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, job_id, version = heapq.heappop(delayed)
            view = self._current(job_id, version)
            if view is not None and view.status == "pending":
                self._push_ready(view)

    def next_ready(self, now: datetime, skip: Collection[str] = ()) -> JobView | None:
        """Take the next job to start at `now` out of the queue; `skip` names jobs in hand.

        A job taken is not offered again until its view changes (a lost claim race leaves
        it to the winner, whose `started` arrives soon).
        """
        self._release_due(now)
        best: tuple[int, int, str] | None = None  # (-priority, served turn, site)
        for site, heap in list(self._ready.items()):
            while heap:
                key = heap[0]
                view = self._current(key[2], key[3])
                if view is not None and view.status == "pending" and key[2] not in skip:
                    break
                heapq.heappop(heap)
            if not heap:
                del self._ready[site]
                continue
            candidate = (heap[0][0], self._served.get(site, 0), site)
            if best is None or candidate < best:
                best = candidate
        if best is None:
            return None
        site = best[2]
        _, _, job_id, version = heapq.heappop(self._ready[site])
        self._served[site] = next(self._turn)
        view = self._current(job_id, version)
        assert view is not None
        return view

    def expired(self, now: datetime, own: Collection[str] = ()) -> Iterator[JobView]:
        """Running jobs whose lease ran out by `now`, each once, except `own` (in hand).

        An entry is a time to look at a job's lease; it is dropped when the job moved on
        (ended, claimed again, or its lease renewed: that pushed an entry of its own).
        """
        leases = self._leases
        seen: set[str] = set()
        in_hand: list[JobView] = []
        while leases and leases[0][0] <= now:
            _, job_id, attempt = heapq.heappop(leases)
            view = self.jobs.get(job_id)
            if (
                view is None
                or view.status != "running"
                or view.attempt != attempt
                or view.lease_expires_at is None
                or view.lease_expires_at > now
                or job_id in seen
            ):
                continue
            seen.add(job_id)
            if job_id in own:
                in_hand.append(view)  # looked at again later, in case it stays stuck
            else:
                yield view
        for view in in_hand:
            heapq.heappush(leases, (now + LEASE_RECHECK, view.job_id, view.attempt))

    def next_wakeup(self) -> datetime | None:
        """When the earliest retry falls due or lease runs out (None: nothing timed)."""
        times = [heap[0][0] for heap in (self._delayed, self._leases) if heap]
        return min(times) if times else None

    def has_ready(self) -> bool:
        return any(self._ready.values())

    def dump(self) -> bytes:
        return self.jobs.dump()

    def load(self, data: bytes) -> None:
        raise NotImplementedError("the worker's queue is rebuilt from the feed, not loaded")
