"""What every route reads: the store, the settings, the read model; opened in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from eventstore import EventStore
from projections.model import ReadModel
from projections.runner import ProjectionRunner
from service.metrics import Metrics
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class AppState:
    store: EventStore
    settings: Settings
    model: ReadModel
    runner: ProjectionRunner
    clock: Callable[[], datetime]
    metrics: Metrics

    def month(self) -> str:
        """This UTC month as `YYYY-MM`."""
        return self.clock().strftime("%Y-%m")
