"""What the `/api/ops/` routes share: their required headers, leads read from their own
streams, the blob store and the per-site locks opened in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import anyio
from starlette.requests import Request

from eventstore import EventStore, streams
from projections.leads import LeadView, load_lead
from service.app_state import AppState
from service.blobs import BlobStore
from service.errors import ApiError, InvalidJson, MissingHeader
from service.http import identity_headers_wellformed, parse_json

LOCK_STRIPES: Final = 64


class LeadNotFound(ApiError):
    """No such lead in the caller's site (another site's lead is not found either)."""

    code = "LeadNotFound"
    status = 404


class SiteLocks:
    """Striped locks by site: this process's creates for one site take turns, so they do not
    spend their conflict retries on each other (other processes still meet as conflicts)."""

    def __init__(self, stripes: int = LOCK_STRIPES) -> None:
        self._locks = [anyio.Lock() for _ in range(stripes)]

    def of(self, site_id: str) -> anyio.Lock:
        return self._locks[hash(site_id) % len(self._locks)]


@dataclass(frozen=True, slots=True)
class OpsState:
    """The ops routes' own resources, kept on `app.state.ops`."""

    blobs: BlobStore
    locks: SiteLocks


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.jobtrail
    return state


def ops_state(request: Request) -> OpsState:
    ops: OpsState = request.app.state.ops
    return ops


def require_ops_headers(request: Request, *, user: bool = False) -> None:
    """Every ops route needs X-Site-Id (the evaluation create also X-User-Id): 400 if absent
    or malformed. Whether they agree with the token is checked later (403)."""
    required = ("X-Site-Id", "X-User-Id") if user else ("X-Site-Id",)
    for header in required:
        if request.headers.get(header) is None:
            raise MissingHeader(f"The {header} header is required.")
    identity_headers_wellformed(request)


def lead_id_param(request: Request) -> str:
    """The path's lead id; 400 InvalidId unless it is 1-64 characters of A-Za-z0-9_-."""
    return streams.valid_id(request.path_params["lead_id"], "lead id")


def parse_body(raw: bytes) -> Any:
    """`parse_json`, also refusing JSON nested too deeply to decode (400, not a 500)."""
    try:
        return parse_json(raw)
    except RecursionError:
        raise InvalidJson("The body is nested too deeply.") from None


async def existing_lead(store: EventStore, site_id: str, lead_id: str) -> LeadView:
    view = await load_lead(store, site_id, lead_id)
    if view is None:
        raise LeadNotFound("Lead not found.")
    return view
