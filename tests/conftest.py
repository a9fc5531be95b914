"""Shared fixtures: anyio on asyncio (the loop uvicorn runs)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
