"""Prometheus metrics of one app: a registry of its own, no module-level collectors.

Requests by route template and status with latency histograms, appends' latency (the
store is wrapped), open SSE streams, and jobs by status read from the read model when
scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterable, Sequence

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from eventstore import EventStore
from eventstore.records import AppendTo, RecordedEvent
from projections.jobs import JobTable

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The collectors of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        self.appends = Histogram(
            "jobtrail_store_append_duration_seconds",
            "Time until an append is durable (fsync included).",
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.sse_streams = Gauge(
            "jobtrail_sse_streams_open",
            "Server-Sent-Event streams open now.",
            registry=self.registry,
        )

    def watch_jobs(self, jobs: JobTable) -> None:
        """Report jobs by status from the read model at each scrape."""
        self.registry.register(_JobsByStatus(jobs))


class RequestStats(Collector):
    """Requests by method, route template and status, with latency histograms by route.

    Counted in plain lists by the event loop that answers them, without the lock and
    the per-call label lookups of prometheus-client's own Counter and Histogram (about a
    tenth of a poll's Python); exported under the same names at each scrape. A scrape
    from another thread may see one request's count before its duration: harmless.
    """

    def __init__(self, buckets: Sequence[float] = _LATENCY) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        self._counts: dict[tuple[str, str, int], int] = {}
        self._timings: dict[tuple[str, str], list[float]] = {}  # per bucket, +Inf, sum

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        timing = self._timings.get((method, route))
        if timing is None:
            timing = self._timings[(method, route)] = [0.0] * (len(self._bounds) + 2)
        timing[bisect_left(self._bounds, seconds)] += 1
        timing[-1] += seconds

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "jobtrail_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in list(self._counts.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "jobtrail_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the body), by route template.",
            labels=["method", "route"],
        )
        for (method, route), timing in list(self._timings.items()):
            seen = list(timing)
            labels = (*map(floatToGoString, self._bounds), "+Inf")
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, tally in zip(labels, seen[:-1], strict=True):
                cumulative += tally
                buckets.append((bound, cumulative))
            latency.add_metric([method, route], buckets, seen[-1])
        yield latency


class _JobsByStatus(Collector):
    def __init__(self, jobs: JobTable) -> None:
        self._jobs = jobs

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "jobtrail_jobs",
            "Jobs known to this process's read model, by status.",
            labels=["status"],
        )
        counts = Tally(view.status for view in self._jobs)
        for status in ("pending", "running", "completed", "failed", "cancelled"):
            family.add_metric([status], counts.get(status, 0))
        yield family


class MeteredStore(EventStore):
    """An EventStore that times appends; everything else is passed through."""

    def __init__(self, inner: EventStore, metrics: Metrics) -> None:
        self.inner = inner
        self._appends = metrics.appends

    async def append_many(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        started = time.perf_counter()
        try:
            return await self.inner.append_many(batch)
        finally:
            self._appends.observe(time.perf_counter() - started)

    async def prune(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        return await self.inner.prune(batch)

    async def prune_deferred(self, batch: Sequence[AppendTo]) -> list[list[RecordedEvent]]:
        return await self.inner.prune_deferred(batch)

    async def compact(self) -> None:
        await self.inner.compact()

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        return await self.inner.read_stream(stream, from_version)

    async def stream_version(self, stream: str) -> int:
        return await self.inner.stream_version(stream)

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        return await self.inner.read_all(from_position, limit)

    async def head(self) -> int:
        return await self.inner.head()

    def follow(self, from_position: int = 1) -> AsyncIterator[RecordedEvent]:
        return self.inner.follow(from_position)

    async def aclose(self) -> None:
        """The caller of create_app owns the inner store and closes it."""
