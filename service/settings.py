"""What `serve` and `up` run with: flags and JOBTRAIL_* variables, validated once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from worker.evaluation.llm import LlmConfig
from worker.evaluation.model import RULES_MODEL

DEFAULT_DATA = "./jobtrail-data"


class SettingsError(ValueError):
    """A flag or JOBTRAIL_* variable that cannot be used (exit 2)."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The service's configuration; built by `from_env`, or directly in tests."""

    data: Path = Path(DEFAULT_DATA)
    secret: str = ""  # JOBTRAIL_SECRET; empty: created in the data directory on first start
    max_json_bytes: int = 1024 * 1024
    max_document_bytes: int = 26_214_400
    retry_base_delay: float = 30.0
    lease_seconds: float = 60.0
    job_types: frozenset[str] = frozenset({"ai_evaluation"})
    handler_modules: tuple[str, ...] = ()  # JOBTRAIL_HANDLERS or --handlers
    evaluation_model: str = RULES_MODEL
    """JOBTRAIL_LLM_MODEL when JOBTRAIL_LLM_URL is set: what `model_version` accepts."""
    checkpoint_seconds: float = 60.0
    """How often a serve process saves the read model's checkpoint (a file store only)."""
    poll_retry_after: int = 2
    max_wait_seconds: int = 30
    retention_seconds: int | None = None
    """JOBTRAIL_RETENTION (`90d`): `up` and `worker` prune finished jobs older than that
    once an hour; unset, nothing is pruned."""


_DURATION = re.compile(r"([0-9]+)(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in `3600s`, `90m`, `12h` or `30d`."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) <= 0:
        raise SettingsError(f"not a duration like 3600s, 90m, 12h or 30d: {text!r}")
    return int(m.group(1)) * _UNIT[m.group(2)]


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from JOBTRAIL_* variables; flags given as `overrides` win."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}

    def number(name: str, field: str, kind: type[int] | type[float]) -> None:
        if name in env:
            try:
                value = kind(env[name])
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {env[name]!r}") from None
            if value < 0:
                raise SettingsError(f"{name} must not be negative")
            values[field] = value

    if env.get("JOBTRAIL_RETENTION"):
        values["retention_seconds"] = parse_duration(env["JOBTRAIL_RETENTION"])
    if "JOBTRAIL_DATA" in env:
        values["data"] = Path(env["JOBTRAIL_DATA"])
    if env.get("JOBTRAIL_SECRET"):
        values["secret"] = env["JOBTRAIL_SECRET"]
    number("JOBTRAIL_MAX_JSON_BYTES", "max_json_bytes", int)
    number("JOBTRAIL_MAX_DOCUMENT_BYTES", "max_document_bytes", int)
    number("JOBTRAIL_RETRY_BASE_DELAY", "retry_base_delay", float)
    number("JOBTRAIL_LEASE_SECONDS", "lease_seconds", float)
    if env.get("JOBTRAIL_HANDLERS"):
        values["handler_modules"] = tuple(
            m.strip() for m in env["JOBTRAIL_HANDLERS"].split(",") if m.strip()
        )
    try:
        llm = LlmConfig.from_env(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if llm is not None:
        values["evaluation_model"] = llm.model
    values.update({k: v for k, v in overrides.items() if v is not None})
    secret = values.get("secret")
    if isinstance(secret, str) and secret and len(secret.encode()) < 32:
        raise SettingsError("JOBTRAIL_SECRET must be at least 32 bytes (HS256 keys)")
    try:
        return msgspec.convert(values, Settings, from_attributes=False, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(str(exc)) from None


def with_handlers(settings: Settings) -> Settings:
    """The settings with the job types of the handler modules loaded (HandlersError on bad)."""
    from worker.handlers import load_handlers

    types = load_handlers(settings.handler_modules).types
    return msgspec.structs.replace(settings, job_types=settings.job_types | types)
