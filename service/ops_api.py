"""Lead AI evaluation (API.md section 1): leads, documents, evaluation jobs, quota."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
