"""The DICOMweb routes, mounted by `api.main` at /dicom-web (WADO-URI also at /wado)."""

from __future__ import annotations

from fastapi import APIRouter

from noctispro.dicomweb import frames, qido, rendered, stow, uri, wado

router = APIRouter(prefix="/dicom-web")
router.include_router(qido.router)
router.include_router(wado.router)
router.include_router(frames.router)
router.include_router(rendered.router)
router.include_router(stow.router)
router.include_router(uri.router)

# DESIGN §3 puts WADO-URI at /wado on the api service; behind nginx only /dicom-web/ reaches
# the api, so it answers at /dicom-web/wado as well.
wado_uri = uri.router
