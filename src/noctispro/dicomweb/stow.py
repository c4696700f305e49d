"""STOW-RS: Store Transaction (PS3.18 10.5) through `core.ingest.store_instance`.

The request must be `multipart/related; type="application/dicom"` (else 415); it is
parsed as it streams in, with bounds (`NOCTISPRO_STOW_MAX_PARTS`, the instance size
limit, the request size limit), and a body that does not parse is refused whole (400,
413) before any part is stored. Every `application/dicom` part is then stored on its
own: a part of another type, one that ingest rejects, or — for `/studies/{uid}` — one
of another study (checked before storing it) is a failure of that part alone.

The response (10.5.3) is DICOM JSON: RetrieveURL of the study when all stored instances
are in one, ReferencedSOPSequence (with each instance's RetrieveURL) and
FailedSOPSequence with FailureReason, the C-STORE status ingest's rejection maps to
(`dimse.statuses`, shared with C-STORE). 200 when all parts were stored, 202 when some
failed or an instance already stored with other content was kept, 409 when none was
stored. `?facility=CODE` files the instances for users of several facilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from noctispro.api.deps import UploaderDep, facility_for_write
from noctispro.api.routing import with_django_connection
from noctispro.conf import get_settings
from noctispro.core.attributes import INDEX_TAGS, read_attributes
from noctispro.core.dicomfile import inspect_file
from noctispro.core.ingest import InstanceRejected, Origin, Outcome, store_instance
from noctispro.dicomweb import media
from noctispro.dicomweb.multipart import BadMultipart, Body, TooManyParts, read_multipart
from noctispro.dicomweb.qido import base_url, warning_header
from noctispro.dimse import statuses

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

PROCESSING_FAILURE = statuses.PROCESSING_FAILURE
CANNOT_UNDERSTAND = statuses.CANNOT_UNDERSTAND
STUDY_MISMATCH = statuses.DATA_SET_DOES_NOT_MATCH_SOP_CLASS  # 0xA900
MAX_WARNINGS = 10


@dataclass
class PartResult:
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    failure: int | None = None
    message: str = ""
    warning: str = ""


def _uids(fp: Any) -> PartResult:
    """The UIDs of a part, as far as they can be read (for the response)."""
    s = get_settings()
    try:
        layout = inspect_file(
            fp, max_bytes=s.max_instance_bytes, max_depth=s.max_sequence_depth, collect=INDEX_TAGS
        )
        attrs = read_attributes(layout)
    except Exception:
        return PartResult()
    return PartResult(
        attrs.sop_class_uid,
        attrs.sop_instance_uid,
        attrs.study_instance_uid,
        attrs.series_instance_uid,
    )


def store_parts(body: Body, origin: Origin, study: str | None) -> list[PartResult]:
    results = []
    for n, part in enumerate(body.parts, start=1):
        if part.content_type != media.DICOM:
            results.append(
                PartResult(
                    failure=CANNOT_UNDERSTAND,
                    message=f"part {n} is {part.content_type or 'untyped'}, not application/dicom",
                )
            )
            continue
        with body.open(part) as fp:
            if study is not None:
                known = _uids(fp)
                if known.study_instance_uid and known.study_instance_uid != study:
                    known.failure = STUDY_MISMATCH
                    known.message = f"part {n} belongs to study {known.study_instance_uid}"
                    results.append(known)
                    continue
            try:
                stored = store_instance(fp, origin)
            except InstanceRejected as exc:
                failed = _uids(fp)
                failed.failure = statuses.STORE_STATUS_FOR_REJECTION.get(
                    exc.reason, PROCESSING_FAILURE
                )
                failed.message = f"part {n}: {exc.reason}: {exc.message}"
                results.append(failed)
                continue
            except Exception:
                log.exception("STOW-RS part %d could not be stored", n)
                failed = _uids(fp)
                failed.failure = PROCESSING_FAILURE
                failed.message = f"part {n}: processing failure"
                results.append(failed)
                continue
        results.append(
            PartResult(
                stored.sop_class_uid,
                stored.sop_instance_uid,
                stored.study_instance_uid,
                stored.series_instance_uid,
                warning=stored.warning if stored.outcome is Outcome.KEPT_FIRST else "",
            )
        )
    return results


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def response_body(results: list[PartResult], base: str) -> dict[str, Any]:
    referenced, failed = [], []
    for r in results:
        item: dict[str, Any] = {
            "00081150": _ui(r.sop_class_uid),
            "00081155": _ui(r.sop_instance_uid),
        }
        if r.failure is None:
            url = (
                f"{base}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
                f"/instances/{r.sop_instance_uid}"
            )
            item["00081190"] = {"vr": "UR", "Value": [url]}
            referenced.append(item)
        else:
            item["00081197"] = {"vr": "US", "Value": [r.failure]}
            failed.append(item)
    out: dict[str, Any] = {}
    studies = {r.study_instance_uid for r in results if r.failure is None}
    if len(studies) == 1:
        out["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies.pop()}"]}
    if failed:
        out["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        out["00081199"] = {"vr": "SQ", "Value": referenced}
    return out


async def stow(request: Request, caller: UploaderDep, study: str | None) -> Response:
    content_type = media.parse_media_type(request.headers.get("content-type", ""))
    part_type = content_type.params.get("type", "").lower()
    if content_type.media_type != media.MULTIPART_RELATED or part_type != media.DICOM:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            'send multipart/related; type="application/dicom" (other STOW-RS forms are not '
            "supported)",
        )
    facility_code = request.query_params.get("facility")
    target = await run_in_threadpool(
        with_django_connection(facility_for_write), caller, facility_code
    )
    settings = get_settings()
    try:
        body = await read_multipart(
            request.stream(),
            content_type.params.get("boundary", ""),
            spool_dir=str(settings.tmp_dir),
            max_parts=settings.stow_max_parts,
            max_part_bytes=settings.max_instance_bytes,
        )
    except BadMultipart as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except TooManyParts as exc:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc)) from exc
    origin = Origin(
        channel="stow",
        ip=request.client.host if request.client else None,
        user_id=caller.user.pk,
        facility=target,
    )
    try:
        results = await run_in_threadpool(with_django_connection(store_parts), body, origin, study)
    finally:
        body.close()
    failures = [r for r in results if r.failure is not None]
    warnings = [r.message for r in failures] + [r.warning for r in results if r.warning]
    if not failures and not warnings:
        code = status.HTTP_200_OK
    elif len(failures) == len(results):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_202_ACCEPTED
    headers = {}
    if warnings:
        headers["Warning"] = warning_header(warnings[:MAX_WARNINGS])
    log.info(
        "STOW-RS by %s: %d stored, %d failed",
        caller.user.username,
        len(results) - len(failures),
        len(failures),
    )
    return Response(
        orjson.dumps(response_body(results, base_url(request))),
        status_code=code,
        media_type=media.DICOM_JSON,
        headers=headers,
    )


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every instance was stored"},
    202: {"description": "Some instances were stored, or stored with warnings"},
    400: {"description": "The body is not a well-formed multipart body"},
    409: {"description": "No instance was stored"},
    413: {"description": "Too many parts, or too large"},
    415: {"description": 'Not multipart/related; type="application/dicom"'},
}


@router.post(
    "/studies",
    summary="STOW-RS: store instances",
    response_class=Response,
    responses=_RESPONSES,
)
async def store_instances(request: Request, caller: UploaderDep) -> Response:
    return await stow(request, caller, None)


@router.post(
    "/studies/{study}",
    summary="STOW-RS: store instances of one study",
    response_class=Response,
    responses=_RESPONSES,
)
async def store_study_instances(study: str, request: Request, caller: UploaderDep) -> Response:
    return await stow(request, caller, study)
