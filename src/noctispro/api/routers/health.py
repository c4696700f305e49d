"""Liveness (`ping`) and real readiness checks (`health`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection
from django.utils import timezone
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from noctispro import __version__
from noctispro.api.deps import SettingsDep
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import Health, HealthCheck, Ping
from noctispro.conf import Settings
from noctispro.storage import get_blob_store

router = APIRouter(tags=["health"], route_class=DjangoRoute)

PROBE = b"noctispro health probe"


def _timed(check: Callable[[], str]) -> HealthCheck:
    start = time.perf_counter()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # a failing part is reported, not raised
        detail = f"{type(exc).__name__}: {exc}"
        ok = False
    return HealthCheck(
        ok=ok, detail=detail, milliseconds=round(1000 * (time.perf_counter() - start), 2)
    )


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    if value != 1:
        raise RuntimeError("SELECT 1 did not return 1")
    return f"{connection.vendor} answered"


def check_storage() -> str:
    store = get_blob_store()
    key = store.put([PROBE])
    try:
        with store.open(key) as f:
            if f.read() != PROBE:
                raise RuntimeError("read back different bytes")
    finally:
        store.delete(key)
    if store.exists(key):
        raise RuntimeError("probe blob still exists after delete")
    return "write, read and delete succeeded"


def check_dicom(settings: Settings) -> str:
    from noctispro.dimse.scu import echo

    host = "127.0.0.1" if settings.bind in {"0.0.0.0", "::", ""} else settings.bind
    status = echo(host, settings.dicom_port, settings.ae_title, timeout=3)
    if status is None:
        raise RuntimeError(f"no association with {settings.ae_title}@{host}:{settings.dicom_port}")
    if status != 0:
        raise RuntimeError(f"C-ECHO status 0x{status:04X}")
    return f"C-ECHO {settings.ae_title}@{host}:{settings.dicom_port} succeeded"


def check_worker(settings: Settings) -> str:
    from noctispro.jobs.worker import latest_heartbeat

    beat = latest_heartbeat()
    if beat is None:
        raise RuntimeError("no worker has ever reported")
    age = (timezone.now() - beat.last_seen).total_seconds()
    if age > settings.health_worker_max_age_seconds:
        raise RuntimeError(f"last heartbeat {age:.0f} s ago from {beat.name}")
    return f"{beat.name} ({beat.backend}) reported {age:.1f} s ago"


@router.get("/ping", response_model=Ping, summary="Liveness: the api process answers")
def ping() -> Ping:
    return Ping(version=__version__)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A part is failing"}},
    summary="Readiness: database, storage, DICOM SCP and worker",
)
def health(settings: SettingsDep) -> JSONResponse:
    checks = {
        "database": _timed(check_database),
        "storage": _timed(check_storage),
        "dicom": _timed(lambda: check_dicom(settings)),
        "worker": _timed(lambda: check_worker(settings)),
    }
    ok = all(c.ok for c in checks.values())
    body = Health(status="ok" if ok else "failing", version=__version__, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
