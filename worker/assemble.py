"""Wiring a worker from settings: the built-in job types, the loaded handlers, the evaluator.

The one place that picks concrete parts (blob store, rules or LLM evaluator, clock); the
`Worker` itself only takes what it is given.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

from eventstore import EventStore
from eventstore.clock import utcnow
from service.blobs import BlobStore, blob_root
from service.settings import Settings
from worker.ai_evaluation import evaluation_handlers
from worker.evaluation.llm import LlmConfig, LlmEvaluator
from worker.evaluation.model import Evaluator
from worker.evaluation.rules import evaluate_rules
from worker.handlers import Handlers, load_handlers
from worker.metrics import WorkerMetrics
from worker.worker import Worker, WorkerConfig


@asynccontextmanager
async def open_evaluator(env: Mapping[str, str]) -> AsyncIterator[Evaluator]:
    """The OpenAI-compatible evaluator when JOBTRAIL_LLM_URL is set, else the rules."""
    config = LlmConfig.from_env(env)
    if config is None:
        yield evaluate_rules
        return
    async with LlmEvaluator.open(config) as evaluator:
        yield evaluator


@asynccontextmanager
async def open_worker(
    store: EventStore,
    settings: Settings,
    *,
    concurrency: int,
    clock: Callable[[], datetime] = utcnow,
    env: Mapping[str, str] | None = None,
    metrics: WorkerMetrics | None = None,
) -> AsyncIterator[Worker]:
    """A worker over `store` with the built-in and `settings.handler_modules` job types."""
    blobs = await BlobStore.open(blob_root(store, settings))
    async with open_evaluator(os.environ if env is None else env) as evaluator:
        handlers = Handlers()
        handlers.merge(evaluation_handlers(store, blobs.read, evaluator, clock))
        handlers.merge(load_handlers(settings.handler_modules))
        config = WorkerConfig(
            concurrency=concurrency,
            lease_seconds=settings.lease_seconds,
            retry_base_delay=settings.retry_base_delay,
        )
        yield Worker(store, handlers, clock, config, metrics=metrics)
