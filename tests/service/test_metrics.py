"""/metrics: Prometheus text with requests, latencies, appends and jobs by status."""

from __future__ import annotations

import pytest

from tests.service.conftest import Service

pytestmark = pytest.mark.anyio


async def test_metrics_count_requests_appends_and_jobs(service: Service) -> None:
    for _ in range(3):
        r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=service.auth())
        assert r.status_code == 202
    await service.client.get("/api/jobs/nope", headers=service.auth())
    await service.client.get("/api/jobs", headers=service.auth())  # catches the model up
    r = await service.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'jobtrail_http_requests_total{method="POST",route="/api/jobs",status="202"} 3.0' in text
    assert 'route="/api/jobs/{job_id}",status="400"' in text
    assert "jobtrail_http_request_duration_seconds_bucket" in text
    assert "jobtrail_store_append_duration_seconds_count 3.0" in text
    assert 'jobtrail_jobs{status="pending"} 3.0' in text
    assert "jobtrail_sse_streams_open" in text
