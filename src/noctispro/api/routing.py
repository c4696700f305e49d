"""Route class that gives Django ORM work in sync endpoints a healthy connection."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections
from fastapi.routing import APIRoute


def with_django_connection(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run Django's per-request connection upkeep in the thread that does the work.

    FastAPI runs sync endpoints in a thread pool; Django connections are per thread
    and Django's request signals never fire here, so stale or broken connections are
    retired (CONN_MAX_AGE, CONN_HEALTH_CHECKS) before and after each call.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper


class DjangoRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = with_django_connection(endpoint)
        super().__init__(path, endpoint, **kwargs)
