"""Events (API.md section 3): a job's history as JSON, and live Server-Sent-Event streams."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
