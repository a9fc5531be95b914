"""One store fixture over every backend: the contract suite runs on each (the file store
twice: with its committer thread, and with the commit process that servers use)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import EventStore, MemoryStore
from eventstore.filestore import open_file_store


@pytest.fixture(params=["memory", "file", "file-process"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    else:
        process = request.param == "file-process"
        async with open_file_store(
            tmp_path / "data", rescan_seconds=0.2, commit_process=process
        ) as file_store:
            yield file_store
