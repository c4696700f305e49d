"""WADO-URI (PS3.18 9) for older viewers: `/wado?requestType=WADO&studyUID=...`.

`contentType=application/dicom` answers the stored Part 10 file (in its stored transfer
syntax; `transferSyntax` must be that one, or absent). image/jpeg and the other
rendered types — the default when contentType is absent — come with the imaging
pipeline; until then they are 406. `anonymize=yes` is not supported (400).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.dicomweb import media
from noctispro.index import selectors
from noctispro.storage import get_blob_store

router = APIRouter(route_class=DjangoRoute, tags=["dicomweb"])


@router.get(
    "/wado",
    summary="WADO-URI: one stored instance (contentType=application/dicom)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/dicom": {}}}},
)
def wado_uri(request: Request, caller: CallerDep) -> StreamingResponse:
    params = request.query_params
    if params.get("requestType") != "WADO":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "requestType must be WADO")
    missing = [p for p in ("studyUID", "seriesUID", "objectUID") if not params.get(p)]
    if missing:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "missing " + ", ".join(missing))
    if params.get("anonymize", "").lower() == "yes":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "anonymize is not supported")
    wanted = [t.strip() for t in params.get("contentType", "image/jpeg").split(",")]
    if not any(media.parse_media_type(t).media_type in (media.DICOM, "*/*") for t in wanted):
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            "only contentType=application/dicom is served; rendered images are not available yet",
        )
    instance = selectors.get_instance(caller.principal, params["objectUID"])
    if (
        instance is None
        or instance.study.study_instance_uid != params["studyUID"]
        or instance.series.series_instance_uid != params["seriesUID"]
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such instance")
    syntax = params.get("transferSyntax")
    if syntax and syntax not in (media.ANY_TRANSFER_SYNTAX, instance.transfer_syntax_uid):
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            f"the instance is stored in {instance.transfer_syntax_uid}; "
            "transcoding is not available yet",
        )
    return StreamingResponse(
        get_blob_store().open_range(instance.storage_key, 0),
        media_type=f"{media.DICOM}; transfer-syntax={instance.transfer_syntax_uid}",
        headers={"Content-Length": str(instance.size_bytes)},
    )
