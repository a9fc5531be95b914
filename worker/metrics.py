"""Prometheus metrics of one worker, in a registry of its own (`--metrics-port` serves it).

In `jobtrail up` the worker registers in the app's registry, so `/metrics` shows both.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class WorkerMetrics:
    """Claims, outcomes, takeovers and timings of one worker."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.started = Counter(
            "jobtrail_worker_attempts_started",
            "Attempts this worker claimed and started.",
            registry=self.registry,
        )
        self.claims_lost = Counter(
            "jobtrail_worker_claims_lost",
            "Claims another worker won first (or the job changed meanwhile).",
            registry=self.registry,
        )
        self.finished = Counter(
            "jobtrail_worker_attempts_finished",
            "Attempts ended, by the event that ended them (completed, failed, cancelled).",
            ["outcome"],
            registry=self.registry,
        )
        self.takeovers = Counter(
            "jobtrail_worker_takeovers",
            "Attempts of other workers ended here because their lease ran out.",
            registry=self.registry,
        )
        self.fenced = Counter(
            "jobtrail_worker_attempts_fenced",
            "Attempts whose result was dropped because the job was taken over meanwhile.",
            registry=self.registry,
        )
        self.pickup = Histogram(
            "jobtrail_worker_pickup_seconds",
            "From a job becoming due (its last event) to this worker's claim.",
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "jobtrail_worker_attempt_seconds",
            "How long handlers ran, per attempt.",
            buckets=_SECONDS,
            registry=self.registry,
        )
