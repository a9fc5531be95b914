"""Job types of your own (API.md section 6): a registry of async handler functions.

    handlers = Handlers()

    @handlers.job("call_analysis")
    async def analyze_call(ctx: JobContext, params: dict) -> dict: ...

`--handlers MODULE` (a module name or a `.py` path) loads the `handlers` object of that
module; `serve` loads the same modules so that it knows which job types exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class JobContext(Protocol):
    """What a handler gets besides its params: the job and a way to report progress."""

    job_id: str
    attempt: int

    async def progress(self, percent: int, message: str = "") -> None: ...


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[Any]]


class JobError(Exception):
    """Raised by a handler: the attempt failed with `code`; retried if `retryable`."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Fail(JobError):
    """Raised by a handler: fail the job with `code` and `message`, without a retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=False)


class Retry(Exception):
    """Raised by a handler: count a failed attempt (`RetryRequested`), try again after `delay` s."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry requested in {delay} s")
        self.delay = delay


class HandlersError(ValueError):
    """A handlers module that cannot be loaded or registers a bad type (exit 2)."""


class Handlers:
    """Job types by name; `job(name)` registers an async function as one."""

    def __init__(self) -> None:
        self._by_type: dict[str, Handler] = {}

    def job(self, job_type: str) -> Callable[[Handler], Handler]:
        if _TYPE.fullmatch(job_type) is None:
            raise HandlersError(f"job type must match {_TYPE.pattern}: {job_type!r}")

        def register(fn: Handler) -> Handler:
            if job_type in self._by_type:
                raise HandlersError(f"job type {job_type!r} is registered twice")
            self._by_type[job_type] = fn
            return fn

        return register

    def get(self, job_type: str) -> Handler | None:
        return self._by_type.get(job_type)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    def merge(self, other: Handlers) -> None:
        for job_type, fn in other._by_type.items():
            self.job(job_type)(fn)


def load_handlers(specs: Iterable[str]) -> Handlers:
    """Merge the `handlers` objects of the named modules or `.py` files."""
    merged = Handlers()
    for spec in specs:
        module = _import(spec.strip())
        found = getattr(module, "handlers", None)
        if not isinstance(found, Handlers):
            raise HandlersError(f"{spec}: no `handlers = Handlers()` object in the module")
        merged.merge(found)
    return merged


def _import(spec: str) -> Any:
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise HandlersError(f"{spec}: no such file")
        name = f"jobtrail_handlers_{abs(hash(str(path.resolve())))}"
        loaded = importlib.util.spec_from_file_location(name, path)
        if loaded is None or loaded.loader is None:
            raise HandlersError(f"{spec}: cannot be loaded")
        module = importlib.util.module_from_spec(loaded)
        sys.modules[name] = module
        try:
            loaded.loader.exec_module(module)
        except Exception as exc:
            raise HandlersError(f"{spec}: {exc!r}") from exc
        return module
    try:
        return importlib.import_module(spec)
    except Exception as exc:
        raise HandlersError(f"{spec}: {exc!r}") from exc
