"""A real uvicorn on 127.0.0.1 serving create_app over a file store in a temp directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from eventstore.filestore import FileStore, open_file_store
from service.app import create_app
from service.auth import Principal, Role, issue_token
from service.settings import Settings
from tests.uvicorn_client import served_client

SECRET = "test-secret-for-jobtrail-tests-0123456789"


@dataclass
class Service:
    client: httpx.AsyncClient
    store: FileStore
    settings: Settings
    data: Path

    def token(self, site: str = "site1", user: str = "user1", role: Role = "member") -> str:
        return issue_token(SECRET, Principal(site, user, role), 3600)

    def auth(
        self, site: str = "site1", user: str = "user1", role: Role = "member"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(site, user, role)}"}

    def files(self) -> dict[str, bytes]:
        """Every file of the data directory and its bytes: to show nothing changed."""
        return {
            str(p.relative_to(self.data)): p.read_bytes()
            for p in sorted(self.data.rglob("*"))
            if p.is_file() and p.name != "feed.mark"
        }


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    data = tmp_path / "data"
    settings = Settings(
        data=data, secret=SECRET, job_types=frozenset({"ai_evaluation", "noop", "report"})
    )
    async with (
        open_file_store(data) as store,
        served_client(create_app(store, settings), within=10) as client,
    ):
        yield Service(client, store, settings, data)
