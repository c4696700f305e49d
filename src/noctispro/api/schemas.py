"""Response models: every route answers with one of these (and OpenAPI shows them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from noctispro.accounts.models import DEFAULT_OPERATIONS, NODE_NAME_PATTERN


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="Seconds until the token expires")


class Ping(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class HealthCheck(BaseModel):
    ok: bool
    detail: str
    milliseconds: float


class Health(BaseModel):
    status: Literal["ok", "failing"]
    version: str
    checks: dict[str, HealthCheck]


class FileResult(BaseModel):
    name: str
    status: Literal["stored", "duplicate", "kept-first", "overwritten", "rejected"]
    reason: str = Field("", description="Machine-readable rejection reason")
    message: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""


class UploadSummary(BaseModel):
    stored: int = 0
    duplicate: int = 0
    kept_first: int = Field(0, alias="kept-first")
    overwritten: int = 0
    rejected: int = 0

    model_config = {"populate_by_name": True}


class UploadResponse(BaseModel):
    summary: UploadSummary
    files: list[FileResult]


class InstanceMetadata(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    number_of_frames: int | None
    rows: int | None
    columns: int | None
    transfer_syntax_uid: str
    size_bytes: int
    dataset_sha256: str
    received_at: datetime
    source_ae_title: str
    source_ip: str | None


class SeriesMetadata(BaseModel):
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    number_of_instances: int
    instances: list[InstanceMetadata]


class StudyMetadata(BaseModel):
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    patient_name: str
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: str
    patient_sex: str
    modalities_in_study: list[str]
    number_of_series: int
    number_of_instances: int
    facility: str
    series: list[SeriesMetadata]


NodeOperation = Literal["store", "find", "move", "get"]


class NodeCreate(BaseModel):
    """A remote DICOM node to add. Unknown fields are refused, so a typo is not ignored."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NODE_NAME_PATTERN, description="Unique; used in URLs")
    ae_title: str = Field(min_length=1, max_length=16, description="Unique among nodes")
    host: str = Field(min_length=1, max_length=253, description="Host name or IP address")
    port: int = Field(ge=1, le=65535)
    facility: str | None = Field(None, description="Facility code; null: no facility")
    allowed_operations: list[NodeOperation] = Field(
        default_factory=lambda: [cast(NodeOperation, op.value) for op in DEFAULT_OPERATIONS],
        description="What the node may ask of us; C-ECHO is always allowed",
    )
    tls: bool = Field(False, description="Call the node over DICOM TLS (BCP 195)")
    description: str = ""


class Node(BaseModel):
    name: str
    ae_title: str
    host: str
    port: int
    facility: str | None
    allowed_operations: list[NodeOperation]
    tls: bool
    description: str
    created_at: datetime


class NodeEcho(BaseModel):
    ok: bool
    status: int | None = Field(description="C-ECHO status; null when no response came")
    milliseconds: float = Field(description="From the connection attempt to the response")
    detail: str


class Problem(BaseModel):
    detail: str


DicomJson = dict[str, Any]


class SendToNode(BaseModel):
    study_instance_uid: str = Field(min_length=1, max_length=64)
    series_instance_uid: str | None = Field(
        None, max_length=64, description="Only this series of the study"
    )


class JobAccepted(BaseModel):
    job_id: int
    state: str
    location: str = Field(description="Where to follow the job: GET it")


class JobStatus(BaseModel):
    id: int
    kind: str
    state: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="0..1")
    progress_message: str
    result: Any = Field(None, description="What the job returned, once it succeeded")
    error: str = Field("", description="Why the last attempt failed")
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
