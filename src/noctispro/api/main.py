"""The FastAPI application: /api/v1, and DICOMweb at /dicom-web (WADO-URI at /wado)."""

from __future__ import annotations

from noctispro.bootstrap import setup_django

settings = setup_django()

from fastapi import APIRouter, FastAPI  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402
from fastapi_offline import FastAPIOffline  # noqa: E402

from noctispro import __version__  # noqa: E402
from noctispro.api.limits import BodySizeLimit  # noqa: E402
from noctispro.api.routers import (  # noqa: E402
    auth,
    dicom,
    health,
    jobs,
    node_qr,
    node_send,
    nodes,
    orders,
)
from noctispro.dicomweb import routes as dicomweb  # noqa: E402
from noctispro.dicomweb.shortcut import SingleImageShortcut  # noqa: E402


def create_app() -> FastAPI:
    # Swagger UI and ReDoc from files we ship: FastAPI's default pages load them from a
    # CDN, which a hospital network (and this build machine) often cannot reach.
    app = FastAPIOffline(
        static_url="/api/v1/docs-static",
        title="NoctisPro PACS API",
        version=__version__,
        docs_url="/api/v1/docs",
        redoc_url="/api/v1/redoc",
        openapi_url="/api/v1/openapi.json",
        description=(
            "Archive API. Authenticate with `POST /api/v1/auth/token` (OAuth2 password "
            "form) and send `Authorization: Bearer <token>`."
        ),
    )
    v1 = APIRouter(prefix="/api/v1")
    v1.include_router(health.router)
    v1.include_router(auth.router)
    v1.include_router(dicom.router)
    v1.include_router(nodes.router)
    v1.include_router(node_qr.router)
    v1.include_router(node_send.router)
    v1.include_router(jobs.router)
    v1.include_router(orders.router)
    app.include_router(v1)
    app.include_router(dicomweb.router)
    app.include_router(dicomweb.wado_uri)
    # Innermost: CORS and the body limit (added after it) wrap it like every route.
    app.add_middleware(SingleImageShortcut)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            # What DICOMweb clients read: paging, warnings, multipart boundaries.
            expose_headers=["X-Total-Count", "Warning", "Content-Type", "Content-Length"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


app = create_app()
