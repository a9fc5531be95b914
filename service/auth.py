"""Bearer tokens: signed (HS256) claims naming a site, a user and a role, with an expiry.

The signing secret comes from JOBTRAIL_SECRET, or is created once in the data directory
(mode 0600) so that every process on that directory shares it.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Literal

import jwt
import msgspec

from eventstore.streams import valid_id
from service.errors import Unauthorized

Role = Literal["member", "admin"]
SECRET_FILE = "secret"
_ALGORITHM = "HS256"


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: from a valid token only."""

    site_id: str
    user_id: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def load_or_create_secret(data: Path) -> str:
    """The data directory's signing secret, created with mode 0600 if it has none."""
    path = data / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(48)
    tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def issue_token(
    secret: str, principal: Principal, ttl_seconds: int, now: float | None = None
) -> str:
    """A signed token for `principal`, valid for `ttl_seconds`."""
    valid_id(principal.site_id, "site id")
    valid_id(principal.user_id, "user id")
    issued = int(time.time() if now is None else now)
    claims = {
        "site": principal.site_id,
        "sub": principal.user_id,
        "role": principal.role,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


class TokenCache:
    """Tokens already verified, with their expiry: a signature is checked once per token.

    Verifying HS256 with PyJWT costs more than the rest of a poll; a token is immutable,
    so only its expiry needs checking again. Bounded, and per app (no global state).
    """

    def __init__(self, secret: str, size: int = 10_000) -> None:
        self._secret = secret
        self._size = size
        self._known: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        hit = self._known.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        principal, expires = _verify(self._secret, token)
        if len(self._known) >= self._size:
            self._known.clear()
        self._known[token] = (principal, expires)
        return principal


def verify_token(secret: str, token: str) -> Principal:
    """The principal of a valid, unexpired token; Unauthorized for anything else."""
    return _verify(secret, token)[0]


def _verify(secret: str, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub"]}
        )
        principal = Principal(str(claims["site"]), str(claims["sub"]), claims["role"])
        valid_id(principal.site_id)
        valid_id(principal.user_id)
        expires = float(claims["exp"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("Missing, invalid or expired token.") from exc
    except Exception as exc:  # InvalidId and the like: a token we did not sign as such
        raise Unauthorized("Missing, invalid or expired token.") from exc
    if principal.role not in ("member", "admin"):
        raise Unauthorized("Missing, invalid or expired token.")
    return principal, expires
