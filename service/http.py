"""Request and response helpers shared by every route: JSON in and out, ids, principals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from eventstore.clock import timestamp as rfc3339
from eventstore.streams import valid_id, valid_job_id
from service.auth import Principal, TokenCache
from service.errors import (
    Forbidden,
    InvalidHeader,
    InvalidJson,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)

T = TypeVar("T")
V = TypeVar("V")

_ENCODER = msgspec.json.Encoder()


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds and a `Z`, as every answer carries times."""
    return None if value is None else rfc3339(value)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JsonBody(_ENCODER.encode(body), status, headers)


def encoded_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer already encoded (see `EncodedViews`)."""
    return JsonBody(body, status, headers)


class JsonBody(Response):
    """An encoded JSON answer whose header list is built directly: Starlette's general
    `init_headers` (lower-casing, membership tests, charset) costs more than a poll's
    own work."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None):
        self.status_code = status
        self.background = None
        self.body = body
        raw = [(b"content-type", b"application/json")]
        if status >= 200 and status not in (204, 304):  # as Starlette: these carry no body
            raw.append((b"content-length", b"%d" % len(body)))
        if headers:  # never Content-Type or Content-Length: those are set here
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw


class EncodedViews(Generic[V]):
    """Answer bodies of immutable views, encoded once per version of each view.

    A read model replaces a view when it changes, so the view's identity says whether
    the kept body is current; polls of an unchanged job (most polls) then skip building
    and encoding the answer. Bounded: the oldest entry goes first. One per app.
    """

    def __init__(self, to_json: Callable[[V], Any], size: int = 10_000) -> None:
        self._to_json = to_json
        self._size = size
        self._known: dict[str, tuple[V, bytes]] = {}

    def body(self, key: str, view: V) -> bytes:
        hit = self._known.get(key)
        if hit is not None and hit[0] is view:
            return hit[1]
        body = _ENCODER.encode(self._to_json(view))
        if hit is None and len(self._known) >= self._size:
            del self._known[next(iter(self._known))]
        self._known[key] = (view, body)
        return body


class CallerHeaders:
    """The request headers every route reads, found in one pass over the raw list.

    Starlette's `headers.get` scans the whole list per name; a poll reads four names.
    The first occurrence of each counts, as with `headers.get`. Kept on the scope, so a
    request is scanned once whatever reads it.
    """

    __slots__ = ("authorization", "prefer", "site", "user")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization: str | None = None
        self.prefer: str | None = None
        self.site: str | None = None
        self.user: str | None = None
        for name, value in raw:
            if name == b"authorization":
                if self.authorization is None:
                    self.authorization = value.decode("latin-1")
            elif name == b"prefer":
                if self.prefer is None:
                    self.prefer = value.decode("latin-1")
            elif name == b"x-site-id":
                if self.site is None:
                    self.site = value.decode("latin-1")
            elif name == b"x-user-id" and self.user is None:
                self.user = value.decode("latin-1")


_CALLER_HEADERS: Final = "jobtrail.caller_headers"


def caller_headers(request: Request) -> CallerHeaders:
    scope = request.scope
    known: CallerHeaders | None = scope.get(_CALLER_HEADERS)
    if known is None:
        known = scope[_CALLER_HEADERS] = CallerHeaders(scope["headers"])
    return known


def principal_of(request: Request, *, query_token: bool = False) -> Principal:
    """The caller from `Authorization: Bearer`; streams may also pass `access_token`."""
    tokens: TokenCache = request.app.state.tokens
    header = caller_headers(request).authorization
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Missing, invalid or expired token.")
        return tokens.verify(token.strip())
    query = request.query_params.get("access_token") if query_token else None
    if query:
        return tokens.verify(query)
    raise Unauthorized("Missing, invalid or expired token.")


def check_identity_headers(request: Request, who: Principal) -> None:
    """X-Site-Id / X-User-Id sent anyway must be well formed (400) and agree with the token
    (403). Call `identity_headers_wellformed` first where a body is parsed in between."""
    site, user = identity_headers_wellformed(request)
    if site is not None and site != who.site_id:
        raise Forbidden("X-Site-Id does not match the token.")
    if user is not None and user != who.user_id:
        raise Forbidden("X-User-Id does not match the token.")


def identity_headers_wellformed(request: Request) -> tuple[str | None, str | None]:
    """`X-Site-Id` and `X-User-Id` as sent (None when absent), each a valid id (else 400)."""
    known = caller_headers(request)
    site = None if known.site is None else valid_id(known.site, "X-Site-Id")
    user = None if known.user is None else valid_id(known.user, "X-User-Id")
    return site, user


def job_id_param(request: Request) -> str:
    """The path's job id, lowercased; 400 InvalidId unless it is a UUID."""
    return valid_job_id(request.path_params["job_id"])


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidHeader("Content-Length must be a whole number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body (400 InvalidJson when it is not JSON); None when empty."""
    if not raw.strip():
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"The body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec raises it for a string that is not UTF-8
        raise InvalidJson("The body is not valid JSON: a string is not UTF-8.") from None
    except RecursionError:
        raise InvalidJson("The body's JSON is nested too deeply.") from None


def convert(value: Any, type_: type[T]) -> T:
    """Validate a parsed body: 422 ValidationError whose message names the field."""
    try:
        return msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(_field_message(str(exc))) from None


_INT64: Final = 2**63


def check_integers(value: Any, where: str) -> None:
    """Integers in free-form JSON must fit the store's 64 bits: 422 naming the field, rather
    than a store that refuses to encode them (503). Iterative: the JSON may nest deeply."""
    pending = [(value, where)]
    while pending:
        item, at = pending.pop()
        if isinstance(item, int) and not isinstance(item, bool) and not -_INT64 <= item < _INT64:
            raise ValidationFailed(f"{at}: integer out of range")
        if isinstance(item, dict):
            pending.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            pending.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


def _field_message(text: str) -> str:
    """msgspec says `... - at `$.priority``; API clients want the field named plainly."""
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return text
    field = where.rstrip("`").removeprefix("$").lstrip(".") or "body"
    return f"{field}: {message}"
