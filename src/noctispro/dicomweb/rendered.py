"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3, 8.3.5.1, 10.4.4 / Sup 203).

Rendered: `/studies/{s}/rendered`, `/series/{se}/rendered`, `.../instances/{i}/rendered`,
`.../frames/{list}/rendered`, as `image/jpeg` (default) or `image/png`, chosen by the
`accept` query parameter (PS3.18 8.3.3.1, it wins over the header) or the Accept header.
Parameters: `window=center,width[,linear|linear-exact|sigmoid]`, `viewport=vw,vh[,sx,sy,
sw,sh]`, `quality=1..100` (JPEG). An instance renders its first frame; a study or series
is `multipart/related; type="image/jpeg"` with one part per image instance (its first
frame), in series and instance order — all instances, as the standard asks.

Thumbnail: a single image representative of the resource, chosen by us: the middle
frame of an instance, the middle image instance of a series, of a study's first series
with images; fitted in 128x128 unless `viewport=` says otherwise.

Single images carry a strong ETag (storage key + parameters) and `Cache-Control:
private, max-age=NOCTISPRO_DICOMWEB_IMAGE_MAX_AGE`; `If-None-Match` gets 304 before
anything is read. Encoded images are cached per process, so a repeated request costs
the database lookup that authorizes it and nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import StreamingResponse

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.dicomweb import media
from noctispro.dicomweb.pixeldata import (
    Located,
    cache_headers,
    encoded_image,
    etag,
    locate,
    locate_frames,
    locate_images,
    not_modified,
    not_modified_response,
    parse_frame_numbers,
)
from noctispro.imaging.errors import InvalidRenderParameter
from noctispro.imaging.lut import Window
from noctispro.imaging.render import THUMBNAIL_SIZE, MediaType, Viewport, render

log = logging.getLogger(__name__)
router = APIRouter(route_class=DjangoRoute, tags=["dicomweb"])
_IMAGE: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "The rendered image"}
}
_MULTIPART: dict[int | str, dict[str, object]] = {
    200: {"content": {'multipart/related; type="image/jpeg"': {}}}
}


@dataclass(frozen=True)
class RenderParams:
    """The rendering parameters of a request (PS3.18 8.3.5.1), checked."""

    media_type: MediaType
    multipart: bool
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int | None = None

    def tag(self, located: Located, kind: str, index: int) -> str:
        return etag(
            located.storage_key, kind, index, self.media_type, self.window, self.viewport,
            self.quality,
        )  # fmt: skip


def negotiate_rendered(accept: str | None) -> tuple[MediaType, bool]:
    """The rendered media type (8.7.4: image/jpeg by default) and whether multipart."""
    for r in media.parse_accept(accept):
        multipart = r.media_type == media.MULTIPART_RELATED
        part = r.params.get("type", "image/jpeg").lower() if multipart else r.media_type
        if part in ("*/*", "image/*", MediaType.JPEG):
            return MediaType.JPEG, multipart
        if part == MediaType.PNG:
            return MediaType.PNG, multipart
    raise HTTPException(
        status.HTTP_406_NOT_ACCEPTABLE, "rendered images are served as image/jpeg or image/png"
    )


def render_params(request: Request, *, thumbnail: bool = False) -> RenderParams:
    query = request.query_params
    media_type, multipart = negotiate_rendered(query.get("accept") or request.headers.get("accept"))
    try:
        viewport = Viewport.parse(query["viewport"]) if query.get("viewport") else None
        if thumbnail:
            return RenderParams(
                media_type, multipart, viewport=viewport or Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
            )
        window = Window.parse(query["window"]) if query.get("window") else None
        quality = None
        if query.get("quality"):
            text = query["quality"]
            if not text.isdigit() or not 1 <= int(text) <= 100:
                raise InvalidRenderParameter(f"quality {text[:20]!r} must be an integer 1..100")
            quality = int(text)
    except InvalidRenderParameter as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.message) from exc
    return RenderParams(media_type, multipart, window, viewport, quality)


def rendered_bytes(located: Located, index: int, params: RenderParams, tag: str) -> bytes:
    opener = located.opener()

    def produce() -> bytes:
        return render(
            opener,
            index,
            window=params.window,
            viewport=params.viewport,
            media_type=params.media_type,
            quality=params.quality,
            cache_key=located.storage_key,
        )

    return encoded_image(tag, produce)


def single_image(
    request: Request, located: Located, index: int, params: RenderParams, kind: str
) -> Response:
    tag = params.tag(located, kind, index)
    if not_modified(request, tag):
        return not_modified_response(tag)
    data = rendered_bytes(located, index, params, tag)
    if params.multipart:
        boundary = media.new_boundary()
        body = b"".join(media.multipart_body(boundary, [(params.media_type, data)]))
        return Response(
            body,
            media_type=media.multipart_type(boundary, params.media_type),
            headers=cache_headers(tag),
        )
    return Response(data, media_type=params.media_type, headers=cache_headers(tag))


def many_images(
    images: list[tuple[Located, int]], params: RenderParams, kind: str
) -> StreamingResponse:
    """One part per image; the first rendered before the response starts (a 4xx if bad)."""
    if not images:
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE, "there is no instance with pixel data to render"
        )
    (first_at, first_index), rest = images[0], images[1:]
    first = rendered_bytes(first_at, first_index, params, params.tag(first_at, kind, first_index))
    boundary = media.new_boundary()

    def body() -> Iterator[bytes]:
        yield media.part_head(boundary, params.media_type, len(first), True)
        yield first
        for located, index in rest:
            try:
                data = rendered_bytes(located, index, params, params.tag(located, kind, index))
            except HTTPException as exc:
                # A part that cannot be rendered is left out; the others are still useful.
                log.warning("rendering %s: %s", located.sop_instance_uid, exc.detail)
                continue
            yield media.part_head(boundary, params.media_type, len(data), False)
            yield data
        yield media.closing(boundary)

    return StreamingResponse(
        body(),
        media_type=media.multipart_type(boundary, params.media_type),
        headers=cache_headers(),
    )


def _middle(located: Located) -> int:
    return (located.number_of_frames or 1) // 2


# --- rendered ---------------------------------------------------------------------------------


@router.get(
    "/studies/{study}/rendered",
    summary="WADO-RS: every image of a study, rendered",
    response_class=StreamingResponse,
    responses=_MULTIPART,
)
def study_rendered(study: str, request: Request, caller: CallerDep) -> Response:
    params = render_params(request)
    images = locate_images(caller.principal, study)
    return many_images([(i, 0) for i in images], params, "rendered")


@router.get(
    "/studies/{study}/series/{series}/rendered",
    summary="WADO-RS: every image of a series, rendered",
    response_class=StreamingResponse,
    responses=_MULTIPART,
)
def series_rendered(study: str, series: str, request: Request, caller: CallerDep) -> Response:
    params = render_params(request)
    images = locate_images(caller.principal, study, series)
    return many_images([(i, 0) for i in images], params, "rendered")


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/rendered",
    summary="WADO-RS: an instance rendered (its first frame)",
    response_class=Response,
    responses=_IMAGE,
)
def instance_rendered(
    study: str, series: str, sop: str, request: Request, caller: CallerDep
) -> Response:
    params = render_params(request)
    located = locate(caller.principal, study, series, sop)
    return single_image(request, located, 0, params, "rendered")


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
    summary="WADO-RS: frames of an instance rendered",
    response_class=Response,
    responses=_IMAGE,
)
def frames_rendered(
    study: str, series: str, sop: str, frames: str, request: Request, caller: CallerDep
) -> Response:
    numbers = parse_frame_numbers(frames)
    params = render_params(request)
    located = locate_frames(caller.principal, study, series, sop, numbers)
    if len(numbers) == 1:
        return single_image(request, located, numbers[0] - 1, params, "rendered")
    return many_images([(located, n - 1) for n in numbers], params, "rendered")


# --- thumbnail --------------------------------------------------------------------------------


def _representative(images: list[Located]) -> Located:
    if not images:
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE, "there is no instance with pixel data to show"
        )
    return images[len(images) // 2]


@router.get(
    "/studies/{study}/thumbnail",
    summary="WADO-RS: a thumbnail of a study",
    response_class=Response,
    responses=_IMAGE,
)
def study_thumbnail(study: str, request: Request, caller: CallerDep) -> Response:
    params = render_params(request, thumbnail=True)
    images = locate_images(caller.principal, study, first_series=True)
    located = _representative(images)
    return single_image(request, located, _middle(located), params, "thumbnail")


@router.get(
    "/studies/{study}/series/{series}/thumbnail",
    summary="WADO-RS: a thumbnail of a series",
    response_class=Response,
    responses=_IMAGE,
)
def series_thumbnail(study: str, series: str, request: Request, caller: CallerDep) -> Response:
    params = render_params(request, thumbnail=True)
    located = _representative(locate_images(caller.principal, study, series))
    return single_image(request, located, _middle(located), params, "thumbnail")


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
    summary="WADO-RS: a thumbnail of an instance (its middle frame)",
    response_class=Response,
    responses=_IMAGE,
)
def instance_thumbnail(
    study: str, series: str, sop: str, request: Request, caller: CallerDep
) -> Response:
    params = render_params(request, thumbnail=True)
    located = locate(caller.principal, study, series, sop)
    return single_image(request, located, _middle(located), params, "thumbnail")


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
    summary="WADO-RS: a thumbnail of a frame",
    response_class=Response,
    responses=_IMAGE,
)
def frame_thumbnail(
    study: str, series: str, sop: str, frames: str, request: Request, caller: CallerDep
) -> Response:
    numbers = parse_frame_numbers(frames)
    params = render_params(request, thumbnail=True)
    located = locate_frames(caller.principal, study, series, sop, numbers)
    return single_image(request, located, numbers[0] - 1, params, "thumbnail")
