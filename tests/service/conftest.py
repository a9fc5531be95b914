"""A real uvicorn on 127.0.0.1 serving create_app over a file store in a temp directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn

from eventstore.filestore import FileStore, open_file_store
from service.app import create_app
from service.auth import Principal, Role, issue_token
from service.settings import Settings

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
    async with open_file_store(data) as store:
        app = create_app(store, settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
                    await anyio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield Service(client, store, settings, data)
            server.should_exit = True
