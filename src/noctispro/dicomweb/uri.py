"""WADO-URI (PS3.18 9) for older viewers: `/wado?requestType=WADO&studyUID=...`.

`contentType=application/dicom` answers the stored Part 10 file, in its stored transfer
syntax or, with `transferSyntax`, transcoded losslessly (`imaging.transcode`; 406 for
what it does not offer). `image/jpeg` (the default when contentType is absent, 9.2.2)
and `image/png` render a frame (`frameNumber`, default 1) with `windowCenter` and
`windowWidth`, fitted in `columns` x `rows` keeping the aspect, at `imageQuality`,
through the same code, cache and ETag as WADO-RS /rendered. `anonymize=yes`,
`region` and `presentationUID` are not supported (400).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.datastructures import QueryParams

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.dicomweb import media
from noctispro.dicomweb.errors import http_error
from noctispro.dicomweb.pixeldata import Located, check_frames
from noctispro.dicomweb.rendered import RenderParams, single_image
from noctispro.imaging.errors import ImagingError, InvalidRenderParameter
from noctispro.imaging.lut import Window
from noctispro.imaging.render import MAX_VIEWPORT, MediaType, Viewport
from noctispro.imaging.transcode import TARGETS, can_transcode, transcode
from noctispro.index import selectors
from noctispro.index.models import Instance
from noctispro.storage import get_blob_store

router = APIRouter(route_class=DjangoRoute, tags=["dicomweb"])
RENDERED_TYPES = (MediaType.JPEG, MediaType.PNG, "image/*")


@router.get(
    "/wado",
    summary="WADO-URI: one stored instance, or a frame of it rendered",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/dicom": {}, "image/jpeg": {}, "image/png": {}}}},
)
def wado_uri(request: Request, caller: CallerDep) -> Response:
    params = request.query_params
    if params.get("requestType") != "WADO":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "requestType must be WADO")
    missing = [p for p in ("studyUID", "seriesUID", "objectUID") if not params.get(p)]
    if missing:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "missing " + ", ".join(missing))
    if params.get("anonymize", "").lower() == "yes":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "anonymize is not supported")
    wanted = [media.parse_media_type(t.strip()).media_type for t in content_types(params)]
    chosen = next((t for t in wanted if t in (media.DICOM, "*/*", *RENDERED_TYPES)), None)
    if chosen is None:
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            "contentType must be application/dicom, image/jpeg or image/png",
        )
    instance = selectors.get_instance(caller.principal, params["objectUID"])
    if (
        instance is None
        or instance.study.study_instance_uid != params["studyUID"]
        or instance.series.series_instance_uid != params["seriesUID"]
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such instance")
    if chosen not in RENDERED_TYPES:
        return part10(instance, params.get("transferSyntax"))
    located = Located(
        instance.sop_instance_uid,
        instance.storage_key,
        instance.transfer_syntax_uid,
        instance.number_of_frames,
    )
    number = _positive(params, "frameNumber") or 1
    check_frames([number], instance.number_of_frames or 1)
    return single_image(request, located, number - 1, uri_render_params(params, chosen), "uri")


def content_types(params: QueryParams) -> list[str]:
    """contentType: a list, in order of preference; image/jpeg when absent (PS3.18 9.2.2)."""
    return [t for t in params.get("contentType", MediaType.JPEG).split(",") if t.strip()]


def _positive(params: QueryParams, name: str, top: int | None = None) -> int | None:
    text = params.get(name)
    if not text:
        return None
    if not text.isdigit() or int(text) < 1 or (top is not None and int(text) > top):
        limit = f"1..{top}" if top else "from 1"
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{name} must be an integer {limit}")
    return int(text)


def uri_render_params(params: QueryParams, content_type: str) -> RenderParams:
    """windowCenter/windowWidth, rows/columns (a viewport keeping the aspect), imageQuality."""
    for unsupported in ("region", "presentationUID"):
        if params.get(unsupported):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{unsupported} is not supported")
    center, width = params.get("windowCenter"), params.get("windowWidth")
    window = None
    if (center is None) != (width is None):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "windowCenter and windowWidth go together")
    rows, columns = (
        _positive(params, "rows", MAX_VIEWPORT),
        _positive(params, "columns", MAX_VIEWPORT),
    )
    try:
        if center is not None and width is not None:
            window = Window.parse(f"{center},{width}")
        viewport = None
        if rows or columns:
            viewport = Viewport(columns or MAX_VIEWPORT, rows or MAX_VIEWPORT)
    except InvalidRenderParameter as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.message) from exc
    quality = _positive(params, "imageQuality", 100)
    media_type = MediaType.PNG if content_type == MediaType.PNG else MediaType.JPEG
    return RenderParams(media_type, False, window, viewport, quality)


def part10(instance: Instance, syntax: str | None) -> Response:
    """The stored file, or transcoded losslessly when transferSyntax asks (9.4.2)."""
    stored = instance.transfer_syntax_uid
    if syntax and syntax not in (media.ANY_TRANSFER_SYNTAX, stored):
        if not can_transcode(stored, syntax):
            raise HTTPException(
                status.HTTP_406_NOT_ACCEPTABLE,
                f"the instance is stored in {stored}; it can be transcoded to "
                + ", ".join(sorted(TARGETS)),
            )
        store = get_blob_store()
        try:
            data = transcode(lambda: store.open(instance.storage_key), syntax)
        except ImagingError as exc:
            raise http_error(exc) from exc
        return Response(data, media_type=f"{media.DICOM}; transfer-syntax={syntax}")
    return StreamingResponse(
        get_blob_store().open_range(instance.storage_key, 0),
        media_type=f"{media.DICOM}; transfer-syntax={stored}",
        headers={"Content-Length": str(instance.size_bytes)},
    )
