"""Instances in and out over HTTP: upload, parse, study metadata, stored file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import JSONResponse, StreamingResponse

from noctispro.api.deps import CallerDep, SettingsDep, UploaderDep, facility_for_write
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import (
    DicomJson,
    InstanceMetadata,
    Problem,
    SeriesMetadata,
    StudyMetadata,
    UploadResponse,
)
from noctispro.core.bundles import FileResult, count_outcomes, store_file_or_zip
from noctispro.core.headers import HeaderError, header_as_dicom_json
from noctispro.core.ingest import Origin
from noctispro.index import selectors
from noctispro.storage import get_blob_store

router = APIRouter(prefix="/dicom", tags=["dicom"], route_class=DjangoRoute)


@router.post(
    "/upload",
    response_model=UploadResponse,
    responses={
        400: {"model": UploadResponse, "description": "Every file was rejected"},
        413: {"model": Problem},
    },
    summary="Store DICOM files or zip archives (multipart field `files`, repeated)",
)
def upload(
    request: Request,
    caller: UploaderDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="DICOM files or zip archives")],
    facility: Annotated[str | None, Form(description="Facility code, if you have several")] = None,
) -> JSONResponse:
    if len(files) > settings.max_upload_files:
        raise HTTPException(413, f"more than {settings.max_upload_files} files")
    target = facility_for_write(caller, facility)
    origin = Origin(
        channel="upload",
        ip=request.client.host if request.client else None,
        user_id=caller.user.pk,
        facility=target,
    )
    results: list[FileResult] = []
    for f in files:
        results.extend(store_file_or_zip(f.filename or "upload", f.file, origin))
    summary = count_outcomes(results)
    body = UploadResponse.model_validate(
        {"summary": summary, "files": [r.__dict__ for r in results]}
    )
    code = status.HTTP_200_OK if any(r.ok for r in results) else status.HTTP_400_BAD_REQUEST
    return JSONResponse(body.model_dump(by_alias=True), status_code=code)


@router.post(
    "/parse",
    response_model=dict[str, Any],
    responses={400: {"model": Problem}},
    summary="Read the header of an uploaded file as DICOM JSON (PS3.18 F.2); nothing is stored",
)
def parse(
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="One DICOM file")],
) -> DicomJson:
    try:
        return header_as_dicom_json(file.file)
    except HeaderError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


@router.get(
    "/studies/{study_uid}/metadata",
    response_model=StudyMetadata,
    responses={404: {"model": Problem}},
    summary="A study with its series and instances, from the index",
)
def study_metadata(study_uid: str, caller: CallerDep) -> StudyMetadata:
    study = selectors.study_tree(caller.principal, study_uid)
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
    return StudyMetadata(
        study_instance_uid=study.study_instance_uid,
        study_date=study.study_date,
        study_time=study.study_time,
        accession_number=study.accession_number,
        study_id=study.study_id,
        study_description=study.study_description,
        referring_physician_name=study.referring_physician_name,
        patient_name=study.patient_name,
        patient_id=study.patient_id,
        issuer_of_patient_id=study.issuer_of_patient_id,
        patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex,
        modalities_in_study=[m for m in study.modalities_in_study.split("\\") if m],
        number_of_series=study.number_of_series,
        number_of_instances=study.number_of_instances,
        facility=study.facility.code,
        series=[
            SeriesMetadata(
                series_instance_uid=se.series_instance_uid,
                modality=se.modality,
                series_number=se.series_number,
                series_description=se.series_description,
                body_part_examined=se.body_part_examined,
                number_of_instances=se.number_of_instances,
                instances=[
                    InstanceMetadata.model_validate(i, from_attributes=True)
                    for i in se.instances.all()
                ],
            )
            for se in study.series.all()
        ],
    )


@router.get(
    "/instances/{sop_instance_uid}/file",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/dicom": {}}, "description": "The stored Part 10 file"},
        404: {"model": Problem},
    },
    summary="The stored file, byte for byte",
)
def instance_file(sop_instance_uid: str, caller: CallerDep) -> StreamingResponse:
    instance = selectors.get_instance(caller.principal, sop_instance_uid)
    if instance is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such instance")
    store = get_blob_store()
    try:
        size = store.size(instance.storage_key)
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "instance file is missing") from exc
    return StreamingResponse(
        store.open_range(instance.storage_key, 0),
        media_type="application/dicom",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{instance.sop_instance_uid}.dcm"',
        },
    )
