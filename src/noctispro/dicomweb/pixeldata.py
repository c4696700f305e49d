"""What the pixel-data resources of WADO-RS share: one located instance, imaging errors as
HTTP statuses, pixel media types (PS3.18 Table 8.7.3-5), ETags and encoded-image caching.

Stored instances are immutable (an overwrite gets a new storage key), so a rendered
image is named by its storage key and the request's parameters: that name is the
strong ETag and the key of a process-wide cache of encoded images.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from django.db import connection
from fastapi import HTTPException, Request, Response, status

from noctispro.accounts.scoping import Principal
from noctispro.conf import get_settings
from noctispro.dicomweb.errors import http_error
from noctispro.dicomweb.wado import instances
from noctispro.imaging.cache import FrameCache
from noctispro.imaging.errors import ImagingError
from noctispro.storage import get_blob_store

# PS3.18 Table 8.7.3-5: the media type of a frame in each compressed transfer syntax.
PIXEL_MEDIA_TYPES: dict[str, frozenset[str]] = {
    "image/jpeg": frozenset(
        {
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.57",
            "1.2.840.10008.1.2.4.70",
        }
    ),
    "image/jls": frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}),
    "image/jp2": frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}),
    "image/jpx": frozenset({"1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"}),
    "image/jph": frozenset(
        {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
    ),
    "image/x-dicom-rle": frozenset({"1.2.840.10008.1.2.5"}),
}
MEDIA_TYPE_OF_SYNTAX = {ts: mt for mt, syntaxes in PIXEL_MEDIA_TYPES.items() for ts in syntaxes}


@dataclass(frozen=True)
class Located:
    """A visible instance's stored file: what the imaging pipeline needs to read it."""

    sop_instance_uid: str
    storage_key: str
    transfer_syntax_uid: str
    number_of_frames: int | None = None  # as indexed; None for a single-frame image

    def opener(self) -> Callable[[], BinaryIO]:
        """A source that opens the blob only when the cache misses (docs/imaging.md)."""
        store, key = get_blob_store(), self.storage_key
        return lambda: store.open(key)


_FIELDS = ("sop_instance_uid", "storage_key", "transfer_syntax_uid", "number_of_frames")


_LOCATE = (
    "SELECT i.sop_instance_uid, i.storage_key, i.transfer_syntax_uid, i.number_of_frames,"
    " st.facility_id FROM index_instance i"
    " JOIN index_study st ON st.id = i.study_id"
    " JOIN index_series se ON se.id = i.series_id"
    " WHERE i.sop_instance_uid = %s AND st.study_instance_uid = %s"
    " AND se.series_instance_uid = %s"
)


def locate(principal: Principal, study: str, series: str, sop: str) -> Located:
    """The instance, if the principal may see its study (`Principal.can_see_facility`,
    the rule `scope_studies` applies); else 404, as for one that does not exist.

    One row by its unique SOP Instance UID, in SQL: this runs for every rendered frame
    and thumbnail a viewer asks for, and the ORM took 0.4 ms to compile it each time.
    """
    with connection.cursor() as cursor:
        cursor.execute(_LOCATE, [sop, study, series])
        row = cursor.fetchone()
    if row is None or not principal.can_see_facility(row[4]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such instance")
    return Located(*row[:4])


def locate_frames(
    principal: Principal, study: str, series: str, sop: str, numbers: list[int]
) -> Located:
    """`locate`, and 404 for a frame number past the frames the index holds."""
    located = locate(principal, study, series, sop)
    check_frames(numbers, located.number_of_frames or 1)
    return located


def locate_images(
    principal: Principal, study: str, series: str | None = None, *, first_series: bool = False
) -> list[Located]:
    """The instances of a study or series that have pixel data (the index keeps Rows), in
    series and instance order; only those of the first series with any if `first_series`."""
    qs = instances(principal, study, series)
    if not qs.exists():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study or series")
    rows = list(qs.filter(rows__isnull=False).values_list("series_id", *_FIELDS))
    if first_series and rows:
        rows = [row for row in rows if row[0] == rows[0][0]]
    return [Located(*row[1:]) for row in rows]


def etag(*parts: object) -> str:
    """A strong entity tag (RFC 9110 8.8.3) naming an immutable stored file and parameters."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16)
    return f'"{digest.hexdigest()}"'


def not_modified(request: Request, tag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): weak comparison, `*` matches any current entity."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    candidates = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in candidates or tag in candidates


def cache_headers(tag: str | None = None) -> dict[str, str]:
    headers = {"Cache-Control": f"private, max-age={get_settings().dicomweb_image_max_age}"}
    if tag is not None:
        headers["ETag"] = tag
    return headers


def not_modified_response(tag: str) -> Response:
    return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=cache_headers(tag))


_images: FrameCache | None = None
_images_lock = threading.Lock()


def encoded_image(tag: str, produce: Callable[[], bytes], *, rendered: bool = True) -> bytes:
    """The encoded image named `tag`, produced once (NOCTISPRO_DICOMWEB_IMAGE_CACHE_BYTES)."""
    global _images
    with _images_lock:
        if _images is None:
            _images = FrameCache(get_settings().dicomweb_image_cache_bytes)
        cache = _images
    try:
        return cache.get_or_load(tag, produce, len)
    except ImagingError as exc:
        raise http_error(exc, rendered=rendered) from exc


def parse_frame_numbers(text: str) -> list[int]:
    """PS3.18 10.4.1.1.4 `{frames}`: a comma-separated list of 1-based frame numbers."""
    numbers = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or int(piece) < 1:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"frame list {text[:80]!r}: frame numbers are integers from 1",
            )
        numbers.append(int(piece))
    return numbers


def check_frames(numbers: Iterable[int], number_of_frames: int) -> None:
    for n in numbers:
        if n > number_of_frames:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"frame {n} does not exist: the instance has {number_of_frames} frame(s)",
            )
