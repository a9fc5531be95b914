"""Idempotency-Key on job creation: one job per key, whatever the repeats and races."""

from __future__ import annotations

import anyio
import pytest

from tests.service.conftest import Service

pytestmark = pytest.mark.anyio


async def jobs_in_store(svc: Service) -> int:
    return sum(1 for e in await svc.store.read_all(1, 100_000) if e.type == "requested")


async def test_a_repeat_gets_the_first_answer_and_creates_nothing(service: Service) -> None:
    headers = {**service.auth(), "Idempotency-Key": "order-42"}
    body = {"type": "noop", "params": {"a": 1, "b": [1, 2]}}
    first = await service.client.post("/api/jobs", json=body, headers=headers)
    again = await service.client.post(
        "/api/jobs", content=b'{"params": {"b": [1, 2], "a": 1}, "type": "noop"}', headers=headers
    )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() and again.headers["location"] == first.headers["location"]
    assert await jobs_in_store(service) == 1


async def test_another_body_with_the_same_key_is_422(service: Service) -> None:
    headers = {**service.auth(), "Idempotency-Key": "k1"}
    await service.client.post("/api/jobs", json={"type": "noop"}, headers=headers)
    r = await service.client.post("/api/jobs", json={"type": "report"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "IdempotencyKeyReused"
    assert await jobs_in_store(service) == 1


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"caf\xe9", b"a\xffb"])
async def test_a_malformed_key_is_400(service: Service, key: bytes) -> None:
    headers = {k.encode(): v.encode() for k, v in service.auth().items()}
    headers[b"Idempotency-Key"] = key
    r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "InvalidHeader"
    assert await jobs_in_store(service) == 0


async def test_rejected_requests_are_not_remembered_and_keys_are_per_user(
    service: Service,
) -> None:
    headers = {**service.auth(), "Idempotency-Key": "k2"}
    bad = await service.client.post("/api/jobs", json={"type": "nope"}, headers=headers)
    assert bad.status_code == 422
    ok = await service.client.post("/api/jobs", json={"type": "noop"}, headers=headers)
    assert ok.status_code == 202
    other = {**service.auth(user="user2"), "Idempotency-Key": "k2"}
    theirs = await service.client.post("/api/jobs", json={"type": "noop"}, headers=other)
    assert theirs.status_code == 202 and theirs.json()["job_id"] != ok.json()["job_id"]


async def test_racing_repeats_create_one_job(service: Service) -> None:
    headers = {**service.auth(), "Idempotency-Key": "race"}
    answers: list[str] = []

    async def post() -> None:
        r = await service.client.post("/api/jobs", json={"type": "noop"}, headers=headers)
        assert r.status_code == 202, r.text
        answers.append(r.json()["job_id"])

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(post)
    assert len(set(answers)) == 1 and len(answers) == 10
    assert await jobs_in_store(service) == 1
