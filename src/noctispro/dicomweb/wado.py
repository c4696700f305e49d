"""WADO-RS: Retrieve Transaction (PS3.18 10.4) for instances, metadata and bulk data.

Instances go out as `multipart/related; type="application/dicom"`, each part the stored
Part 10 file read from storage in chunks, so a study is never held in memory. They are
served in the transfer syntax they are stored in when asked for with `transfer-syntax=*`,
with that syntax's UID, or with no parameter (PS3.18 8.7.3.5.2 names Explicit VR Little
Endian as the default; we send what was stored, unaltered). Another syntax is
transcoded to, instance by instance, when `imaging.transcode` offers it (Explicit and
Implicit VR Little Endian, RLE, JPEG 2000 and HTJ2K Lossless); lossy targets are 406.

Metadata is the DICOM JSON kept in the index (`index.metadata`), BulkDataURIs pointing
at `.../instances/{uid}/bulkdata/{tag path}`, which answers the value as
`multipart/related; type="application/octet-stream"` (native values only: compressed
pixel data is served as frames: frames.py; rendered and thumbnails: rendered.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import StreamingResponse

from noctispro.accounts.scoping import Principal
from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.conf import get_settings
from noctispro.core.metadata import (
    BULK_DATA_URI_MARKER,
    EncapsulatedBulkData,
    NoSuchBulkData,
    bulk_data,
)
from noctispro.dicomweb import media
from noctispro.dicomweb.errors import http_error
from noctispro.dicomweb.qido import base_url, check_accept, warning_header
from noctispro.imaging.errors import ImagingError
from noctispro.imaging.transcode import TARGETS, can_transcode, transcode
from noctispro.index import selectors
from noctispro.index.metadata import metadata_rows
from noctispro.index.models import Instance
from noctispro.storage import get_blob_store

log = logging.getLogger(__name__)
router = APIRouter(route_class=DjangoRoute, tags=["dicomweb"])

_ORDER = ("series__series_number", "series_id", "instance_number", "id")
_MULTIPART: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {'multipart/related; type="application/dicom"': {}},
        "description": "The stored instances",
    }
}


def instances(
    principal: Principal, study: str, series: str | None = None, sop: str | None = None
) -> QuerySet[Instance]:
    qs = selectors.visible_instances(principal).filter(study__study_instance_uid=study)
    if series is not None:
        qs = qs.filter(series__series_instance_uid=series)
    if sop is not None:
        qs = qs.filter(sop_instance_uid=sop)
    return qs.order_by(*_ORDER)


def negotiate_instances(accept: str | None, syntaxes: set[str]) -> str | None:
    """The transfer syntax to send (None: each as stored), or 406 (8.7.3.5.2).

    `transfer-syntax=*`, no parameter, or the one syntax the instances are stored in
    send them as stored; another syntax is transcoded to when `imaging.transcode`
    offers it for every instance (lossless only), else the next acceptable type is tried.
    """
    for r in media.parse_accept(accept):
        if r.media_type in ("*/*", "multipart/*"):
            return None
        if r.media_type == media.MULTIPART_RELATED:
            part = r.params.get("type", media.DICOM).lower()
        elif r.media_type == media.DICOM:
            part = media.DICOM
        else:
            continue
        if not media.MediaRange(part).matches(media.DICOM):
            continue
        syntax = r.params.get("transfer-syntax")
        if syntax is None or syntax == media.ANY_TRANSFER_SYNTAX or syntaxes == {syntax}:
            return None
        if all(can_transcode(stored, syntax) for stored in syntaxes):
            return syntax
    raise HTTPException(
        status.HTTP_406_NOT_ACCEPTABLE,
        "instances are served as application/dicom as stored ("
        + ", ".join(sorted(syntaxes))
        + ") or transcoded losslessly to one of "
        + ", ".join(sorted(TARGETS)),
    )


def retrieve(request: Request, qs: QuerySet[Instance]) -> StreamingResponse:
    rows = list(qs.values_list("storage_key", "size_bytes", "transfer_syntax_uid"))
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study, series or instance")
    target = negotiate_instances(request.headers.get("accept"), {ts for _, _, ts in rows})
    if target is not None:
        return retrieve_transcoded(rows, target)
    boundary = media.new_boundary()
    heads = [
        media.part_head(boundary, f"{media.DICOM}; transfer-syntax={ts}", size, n == 0)
        for n, (_, size, ts) in enumerate(rows)
    ]
    tail = media.closing(boundary)
    length = sum(len(h) for h in heads) + sum(size for _, size, _ in rows) + len(tail)
    store = get_blob_store()

    def body() -> Iterator[bytes]:
        for head, (key, _, _) in zip(heads, rows, strict=True):
            yield head
            yield from store.open_range(key, 0)
        yield tail

    return StreamingResponse(
        body(),
        media_type=media.multipart_type(boundary, media.DICOM),
        headers={"Content-Length": str(length)},
    )


def retrieve_transcoded(rows: list[tuple[str, int, str]], target: str) -> StreamingResponse:
    """Instances in `target`, one at a time: each transcoded in memory (bounded by
    NOCTISPRO_IMAGING_MAX_PIXEL_BYTES), those already in `target` streamed as stored.
    The first is transcoded before the response starts, so a bad file is a 4xx; a later
    failure ends the body without its closing boundary rather than drop an instance."""
    store = get_blob_store()
    content_type = f"{media.DICOM}; transfer-syntax={target}"
    boundary = media.new_boundary()

    def transcoded(key: str) -> bytes:
        return transcode(lambda: store.open(key), target)

    first: bytes | None = None
    key0, _, ts0 = rows[0]
    if ts0 != target:
        try:
            first = transcoded(key0)
        except ImagingError as exc:
            raise http_error(exc) from exc

    def body() -> Iterator[bytes]:
        for n, (key, size, ts) in enumerate(rows):
            if ts == target:
                yield media.part_head(boundary, content_type, size, n == 0)
                yield from store.open_range(key, 0)
                continue
            try:
                data = first if n == 0 and first is not None else transcoded(key)
            except ImagingError as exc:
                log.error("transcoding %s to %s: %s", key, target, exc)
                return
            yield media.part_head(boundary, content_type, len(data), n == 0)
            yield data
        yield media.closing(boundary)

    return StreamingResponse(body(), media_type=media.multipart_type(boundary, media.DICOM))


def metadata(request: Request, qs: QuerySet[Instance]) -> Response:
    check_accept(request)
    rows = metadata_rows(qs)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study, series or instance")
    base = base_url(request)
    parts = []
    unreadable = []
    for row in rows:
        if row.dicom_json is None:
            unreadable.append(row.sop_instance_uid)
            continue
        prefix = (
            f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
            f"/instances/{row.sop_instance_uid}/bulkdata/"
        ).encode()
        parts.append(row.dicom_json.replace(BULK_DATA_URI_MARKER, BULK_DATA_URI_MARKER + prefix))
    headers = {}
    if unreadable:
        headers["Warning"] = warning_header(
            ["stored files could not be read: " + ", ".join(unreadable[:10])]
        )
    return Response(b"[" + b",".join(parts) + b"]", media_type=media.DICOM_JSON, headers=headers)


@router.get(
    "/studies/{study}",
    summary="WADO-RS: retrieve a study",
    response_class=StreamingResponse,
    responses=_MULTIPART,
)
def retrieve_study(study: str, request: Request, caller: CallerDep) -> StreamingResponse:
    return retrieve(request, instances(caller.principal, study))


@router.get(
    "/studies/{study}/series/{series}",
    summary="WADO-RS: retrieve a series",
    response_class=StreamingResponse,
    responses=_MULTIPART,
)
def retrieve_series(
    study: str, series: str, request: Request, caller: CallerDep
) -> StreamingResponse:
    return retrieve(request, instances(caller.principal, study, series))


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}",
    summary="WADO-RS: retrieve an instance",
    response_class=StreamingResponse,
    responses=_MULTIPART,
)
def retrieve_instance(
    study: str, series: str, sop: str, request: Request, caller: CallerDep
) -> StreamingResponse:
    return retrieve(request, instances(caller.principal, study, series, sop))


@router.get(
    "/studies/{study}/metadata",
    summary="WADO-RS: metadata of a study (DICOM JSON)",
    response_class=Response,
)
def study_metadata(study: str, request: Request, caller: CallerDep) -> Response:
    return metadata(request, instances(caller.principal, study))


@router.get(
    "/studies/{study}/series/{series}/metadata",
    summary="WADO-RS: metadata of a series (DICOM JSON)",
    response_class=Response,
)
def series_metadata(study: str, series: str, request: Request, caller: CallerDep) -> Response:
    return metadata(request, instances(caller.principal, study, series))


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/metadata",
    summary="WADO-RS: metadata of an instance (DICOM JSON)",
    response_class=Response,
)
def instance_metadata(
    study: str, series: str, sop: str, request: Request, caller: CallerDep
) -> Response:
    return metadata(request, instances(caller.principal, study, series, sop))


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}",
    summary="WADO-RS: a bulk data value (the BulkDataURI of the metadata)",
    response_class=StreamingResponse,
    responses={200: {"content": {'multipart/related; type="application/octet-stream"': {}}}},
)
def retrieve_bulk_data(
    study: str, series: str, sop: str, path: str, request: Request, caller: CallerDep
) -> StreamingResponse:
    ranges = media.parse_accept(request.headers.get("accept"))
    if not any(
        r.media_type in ("*/*", "multipart/*", media.OCTET_STREAM)
        or (
            r.media_type == media.MULTIPART_RELATED
            and media.MediaRange(r.params.get("type", "*/*").lower()).matches(media.OCTET_STREAM)
        )
        for r in ranges
    ):
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            'bulk data is served as multipart/related; type="application/octet-stream"',
        )
    row = instances(caller.principal, study, series, sop).values_list(
        "storage_key", "transfer_syntax_uid"
    )
    found = row.first()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such instance")
    key, syntax = found
    store = get_blob_store()
    try:
        with store.open(key) as fp:
            value = bulk_data(
                fp,
                path,
                inline_max=get_settings().dicomweb_inline_binary_max,
                transfer_syntax_uid=syntax,
            )
    except ValueError as exc:
        if isinstance(exc, EncapsulatedBulkData):
            raise HTTPException(
                status.HTTP_406_NOT_ACCEPTABLE,
                "compressed pixel data is served as frames: .../instances/{uid}/frames/{list}",
            ) from exc
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except NoSuchBulkData as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no bulk data at {path[:80]}") from exc
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the stored file is missing") from exc
    boundary = media.new_boundary()
    head = media.part_head(boundary, media.OCTET_STREAM, value.length, True)
    tail = media.closing(boundary)

    def body() -> Iterator[bytes]:
        yield head
        if value.offset is not None:
            yield from store.open_range(key, value.offset, value.offset + value.length)
        else:
            yield value.value or b""
        yield tail

    return StreamingResponse(
        body(),
        media_type=media.multipart_type(boundary, media.OCTET_STREAM),
        headers={"Content-Length": str(len(head) + value.length + len(tail))},
    )
