"""Prometheus metrics of one app: a registry of its own, no module-level collectors.

Requests by route template and status with latency histograms, appends' latency (the
store is wrapped), open SSE streams, and jobs by status read from the read model when
scraped.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventstore import EventStore
from eventstore.records import AppendTo, RecordedEvent
from projections.jobs import JobTable

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The collectors of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "jobtrail_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jobtrail_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the body), by route template.",
            ["method", "route"],
            buckets=_LATENCY,
            registry=self.registry,
        )
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
