"""/openapi.json covers every route, and answers conform to the schemas it names."""

from __future__ import annotations

import msgspec
import pytest
from starlette.routing import Route

from service import schemas
from service.app import create_app
from tests.service.conftest import Service

pytestmark = pytest.mark.anyio


async def test_every_route_is_documented(service: Service) -> None:
    doc = (await service.client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    routes = [
        (method.lower(), r.path)
        for r in create_app(service.store, service.settings).routes
        if isinstance(r, Route)
        for method in set(r.methods or ()) - {"HEAD"}
    ]
    for method, path in routes:
        assert method in doc["paths"].get(path, {}), f"{method} {path} is not documented"
    for ops in doc["paths"].values():
        for op in ops.values():
            for answer in op["responses"].values():
                for media in answer.get("content", {}).values():
                    ref = media["schema"].get("$ref", "")
                    assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]


async def test_answers_conform_to_their_schemas(service: Service) -> None:
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=service.auth())
    msgspec.convert(r.json(), schemas.JobAccepted)
    job_id = r.json()["job_id"]
    got = await service.client.get(f"/api/jobs/{job_id}", headers=service.auth())
    msgspec.convert(got.json(), schemas.Job)
    page = await service.client.get("/api/jobs", headers=service.auth())
    msgspec.convert(page.json(), schemas.JobPage)
    legacy = await service.client.get(f"/api/job-status/{job_id}", headers=service.auth())
    msgspec.convert(legacy.json(), schemas.LegacyJob)
    usage = await service.client.get("/api/usage", headers=service.auth())
    msgspec.convert(usage.json(), schemas.UsageAnswer)
    error = await service.client.get("/api/jobs/nope", headers=service.auth())
    msgspec.convert(error.json(), schemas.Error)
