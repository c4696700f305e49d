"""Job kinds: the `@job(kind)` decorator and the one list of modules that define kinds.

Nothing here touches the database, so task modules can register kinds at import time.
Workers and `enqueue` import `TASK_MODULES` on first use; a kind that is not found
after that is a programming error (ValueError), not a job that waits forever.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# Every module that defines job kinds. Add yours here, not in the worker.
TASK_MODULES: list[str] = [
    "noctispro.index.tasks",
    "noctispro.dimse.remote_qr",
    "noctispro.dimse.tasks",
]

F = TypeVar("F", bound=Callable[..., Any])


class PermanentJobError(Exception):
    """Raised by a job that cannot succeed on a retry: the job fails at once."""


class JobInterrupted(BaseException):
    """Ends a running job early. A BaseException so `except Exception` in jobs cannot swallow it."""


class JobCancelled(JobInterrupted):
    """Someone asked for the job to be cancelled; it ends in state `cancelled`."""


class JobAbandoned(JobInterrupted):
    """The worker is stopping; the job goes back to the queue without using an attempt."""


class LeaseLost(JobInterrupted):
    """The job's lease expired and another worker may own it now; stop without writing."""


@dataclass(frozen=True)
class JobKind:
    name: str
    fn: Callable[..., Any]

    def check_payload(self, payload: dict[str, Any]) -> None:
        """Refuse a payload that the function cannot be called with, before it is queued."""
        try:
            inspect.signature(self.fn).bind(None, **payload)
        except TypeError as exc:
            raise ValueError(f"payload does not fit job kind {self.name!r}: {exc}") from None


_kinds: dict[str, JobKind] = {}
_load_lock = threading.Lock()
_loaded = False


def job(kind: str) -> Callable[[F], F]:
    """Register `fn(ctx: JobContext, **payload) -> JSON-serialisable result` as `kind`."""

    def register(fn: F) -> F:
        existing = _kinds.get(kind)
        if existing is not None and _qualname(existing.fn) != _qualname(fn):
            raise ValueError(f"job kind {kind!r} is already registered by {_qualname(existing.fn)}")
        _kinds[kind] = JobKind(kind, fn)
        return fn

    return register


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def load_task_modules() -> None:
    """Import every module in TASK_MODULES once, so their kinds are registered."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            for name in TASK_MODULES:
                importlib.import_module(name)
            _loaded = True


def lookup(kind: str) -> JobKind:
    """The registered kind, importing the task modules first if needed."""
    if kind not in _kinds:
        load_task_modules()
    try:
        return _kinds[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r}") from None


def registered_kinds() -> list[str]:
    load_task_modules()
    return sorted(_kinds)
