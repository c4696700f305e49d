"""WADO-RS frames: `/studies/{s}/series/{se}/instances/{i}/frames/{1,3,5}` (PS3.18 10.4.1.1.4).

Frames go out as `multipart/related`, one part per requested frame in the requested
order, either

- uncompressed: `type="application/octet-stream"` (the default, PS3.18 8.7.3.5.2),
  the decoded samples as Explicit VR Little Endian would hold them (YBR decoded to RGB,
  as pydicom's pixel_array), transfer-syntax absent or 1.2.840.10008.1.2.1; or
- as stored: the frame's compressed codestream, byte for byte, when the stored syntax
  is encapsulated and the client accepts it: its media type of Table 8.7.3-5
  (`image/jls`, `image/jp2`, `image/jpeg`, `image/x-dicom-rle`, ...) or
  `application/octet-stream; transfer-syntax=*` (what OHIF asks for). Each part names
  its transfer syntax.

A single frame may be asked for as a single part (`Accept: image/jls`). A frame list
that is not 1-based integers is 400; a frame past the end, or an instance without
pixel data, is 404; nothing acceptable is 406. The first frame is produced before the
response starts, so a bad file is a 4xx; the others are streamed one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import StreamingResponse
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from noctispro.api.deps import CallerDep
from noctispro.api.routing import DjangoRoute
from noctispro.dicomweb import media
from noctispro.dicomweb.pixeldata import (
    MEDIA_TYPE_OF_SYNTAX,
    PIXEL_MEDIA_TYPES,
    Located,
    check_frames,
    http_error,
    locate,
    parse_frame_numbers,
)
from noctispro.imaging.cache import cached_frame, cached_info
from noctispro.imaging.errors import ImagingError
from noctispro.imaging.pixels import ImageInfo, stored_frame
from noctispro.storage import get_blob_store

log = logging.getLogger(__name__)
router = APIRouter(route_class=DjangoRoute, tags=["dicomweb"])

NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


@dataclass(frozen=True)
class FrameChoice:
    """What the parts hold: the stored codestream, or decoded samples; and their label."""

    media_type: str
    transfer_syntax_uid: str
    as_stored: bool
    multipart: bool

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax_uid}"


def negotiate_frames(accept: str | None, info: ImageInfo, count: int) -> FrameChoice:
    """The first acceptable representation in the client's order of preference (8.7.4)."""
    stored = str(info.transfer_syntax_uid)
    encapsulated = info.is_encapsulated
    for r in media.parse_accept(accept):
        multipart = r.media_type in (media.MULTIPART_RELATED, "*/*", "multipart/*")
        if r.media_type == media.MULTIPART_RELATED:
            part = r.params.get("type", media.OCTET_STREAM).lower()
        elif multipart:
            part = "*/*"
        elif count == 1:
            part = r.media_type
        else:
            continue  # a single-part type carries one frame
        syntax = r.params.get("transfer-syntax")
        if part in ("*/*", "application/*", media.OCTET_STREAM):
            if syntax in (None, ExplicitVRLittleEndian):
                return FrameChoice(media.OCTET_STREAM, ExplicitVRLittleEndian, False, multipart)
            if syntax in (media.ANY_TRANSFER_SYNTAX, stored):
                if encapsulated:
                    return FrameChoice(media.OCTET_STREAM, stored, True, multipart)
                if syntax == stored and stored in NATIVE_LITTLE_ENDIAN:
                    return FrameChoice(media.OCTET_STREAM, stored, False, multipart)
                return FrameChoice(media.OCTET_STREAM, ExplicitVRLittleEndian, False, multipart)
        if not encapsulated or stored not in MEDIA_TYPE_OF_SYNTAX:
            continue
        named = part == "image/*" or stored in PIXEL_MEDIA_TYPES.get(part, ())
        if named and syntax in (None, media.ANY_TRANSFER_SYNTAX, stored):
            return FrameChoice(MEDIA_TYPE_OF_SYNTAX[stored], stored, True, multipart)
    offered = 'multipart/related; type="application/octet-stream"'
    if encapsulated and stored in MEDIA_TYPE_OF_SYNTAX:
        offered += f' or type="{MEDIA_TYPE_OF_SYNTAX[stored]}"; transfer-syntax={stored}'
    raise HTTPException(
        status.HTTP_406_NOT_ACCEPTABLE,
        f"frames of this instance (stored in {stored}) are served as {offered}",
    )


def _frame_source(located: Located, info: ImageInfo, choice: FrameChoice) -> FrameSource:
    if choice.as_stored:
        return _StoredFrames(get_blob_store().open(located.storage_key), info)
    return _DecodedFrames(located)


class FrameSource:
    def get(self, number: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release what `get` held open."""


class _StoredFrames(FrameSource):
    """Codestreams as stored, read through one open blob for the whole request."""

    def __init__(self, fp: BinaryIO, info: ImageInfo) -> None:
        self.fp, self.info = fp, info

    def get(self, number: int) -> bytes:
        return stored_frame(self.fp, number - 1, info=self.info)

    def close(self) -> None:
        self.fp.close()


class _DecodedFrames(FrameSource):
    """Decoded samples, through the frame cache (a hit does not open the blob)."""

    def __init__(self, located: Located) -> None:
        self.located = located
        self.opener = located.opener()

    def get(self, number: int) -> bytes:
        _, frame = cached_frame(self.opener, number - 1, cache_key=self.located.storage_key)
        return frame.little_endian_bytes()


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
    summary="WADO-RS: frames of an instance (uncompressed or as stored)",
    response_class=StreamingResponse,
    responses={200: {"content": {'multipart/related; type="application/octet-stream"': {}}}},
)
def retrieve_frames(
    study: str, series: str, sop: str, frames: str, request: Request, caller: CallerDep
) -> Response:
    numbers = parse_frame_numbers(frames)
    located = locate(caller.principal, study, series, sop)
    try:
        info = cached_info(located.opener(), cache_key=located.storage_key)
    except ImagingError as exc:
        raise http_error(exc) from exc
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the stored file is missing") from exc
    check_frames(numbers, info.number_of_frames)
    choice = negotiate_frames(request.headers.get("accept"), info, len(numbers))
    source = _frame_source(located, info, choice)
    try:
        first = source.get(numbers[0])
    except ImagingError as exc:
        source.close()
        raise http_error(exc) from exc
    if not choice.multipart:
        source.close()
        return Response(first, media_type=choice.content_type)
    boundary = media.new_boundary()

    def body() -> Iterator[bytes]:
        try:
            yield media.part_head(boundary, choice.content_type, len(first), True)
            yield first
            for number in numbers[1:]:
                try:
                    data = source.get(number)
                except ImagingError as exc:
                    # Too late for a status: end without the closing boundary, so the
                    # client sees a truncated body rather than fewer frames.
                    log.error("frame %d of %s: %s", number, located.sop_instance_uid, exc)
                    return
                yield media.part_head(boundary, choice.content_type, len(data), False)
                yield data
            yield media.closing(boundary)
        finally:
            source.close()

    return StreamingResponse(body(), media_type=media.multipart_type(boundary, choice.media_type))
