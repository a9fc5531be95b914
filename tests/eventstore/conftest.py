"""One store fixture over every backend: the contract suite runs on each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import EventStore, MemoryStore
from eventstore.filestore import open_file_store


@pytest.fixture(params=["memory", "file"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    else:
        async with open_file_store(tmp_path / "data", rescan_seconds=0.2) as file_store:
            yield file_store
