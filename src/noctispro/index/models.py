"""The archive index: Patient → Study → Series → Instance, and the change log.

Attributes are those C-FIND and QIDO-RS match and return at each level (PS3.4 C.6).
Patient attributes are copied onto the study so that study queries filter and sort on
one table (a join to patient made name + date queries ~9x slower at 1M instances).
Aggregates (related series/instances, modalities in study) are kept here by ingest,
never counted per query.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from noctispro.accounts.models import Facility

# PostgreSQL operator class for LIKE 'prefix%' on varchar under any collation.
PATTERN_OPS = "varchar_pattern_ops"


class Patient(models.Model):
    """Keyed by PatientID + IssuerOfPatientID within a facility."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="patients")
    patient_id = models.CharField(max_length=64, blank=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_name = models.CharField(max_length=324, blank=True)
    # `matching.person_name_key(patient_name)`: for case-insensitive matching with an index.
    patient_name_search = models.CharField(max_length=324, blank=True)
    patient_birth_date = models.CharField(max_length=8, blank=True)
    patient_sex = models.CharField(max_length=16, blank=True)
    number_of_studies = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "patient_id", "issuer_of_patient_id"],
                name="patient_key_per_facility",
            )
        ]
        # Pattern operator classes (PostgreSQL; ignored elsewhere) so that wildcard
        # matching `DOE*` (LIKE 'DOE%') uses the index whatever the collation; equality
        # uses them too.
        indexes = [
            models.Index(fields=["patient_id"], name="patient_id_idx", opclasses=[PATTERN_OPS]),
            models.Index(
                fields=["patient_name_search"], name="patient_pname_idx", opclasses=[PATTERN_OPS]
            ),
        ]

    def __str__(self) -> str:
        return f"{self.patient_name or '(no name)'} [{self.patient_id}]"


class Study(models.Model):
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="studies")
    # Not `patient`: its column would clash with the PatientID attribute below.
    patient_record = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    study_instance_uid = models.CharField(max_length=64, unique=True)
    study_date = models.CharField(max_length=8, blank=True)
    study_time = models.CharField(max_length=16, blank=True)
    accession_number = models.CharField(max_length=64, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    study_description = models.CharField(max_length=1024, blank=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    referring_physician_name_search = models.CharField(max_length=324, blank=True)
    # Denormalized from Patient for single-table study queries.
    patient_name = models.CharField(max_length=324, blank=True)
    # `matching.person_name_key(patient_name)`: upper-cased, for case-insensitive
    # PersonName matching with an index.
    patient_name_search = models.CharField(max_length=324, blank=True)
    patient_id = models.CharField(max_length=64, blank=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_birth_date = models.CharField(max_length=8, blank=True)
    patient_sex = models.CharField(max_length=16, blank=True)
    specific_character_set = models.CharField(max_length=128, blank=True)
    # Kept aggregates.
    modalities_in_study = models.CharField(max_length=256, blank=True)
    sop_classes_in_study = models.TextField(blank=True)
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_received_at = models.DateTimeField(db_index=True)
    is_stable = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "studies"
        indexes = [
            # Worklist order with keyset paging: (date, id) descending, per facility too.
            models.Index(fields=["-study_date", "-id"], name="study_date_id_idx"),
            models.Index(fields=["facility", "-study_date", "-id"], name="study_fac_date_id_idx"),
            models.Index(
                fields=["patient_name_search"], name="study_pname_idx", opclasses=[PATTERN_OPS]
            ),
            models.Index(fields=["patient_id"], name="study_pid_idx", opclasses=[PATTERN_OPS]),
            models.Index(
                fields=["accession_number"], name="study_accession_idx", opclasses=[PATTERN_OPS]
            ),
            models.Index(fields=["modalities_in_study"], name="study_modalities_idx"),
            models.Index(fields=["is_stable", "last_received_at"], name="study_stable_idx"),
            # A patient's visible studies (patient-level C-FIND counts and character
            # set): both equalities in one index, so SQLite without statistics does not
            # walk every study of the facility per patient instead (2.5 s at 20,000).
            models.Index(fields=["patient_record", "facility"], name="study_patient_fac_idx"),
        ]

    def __str__(self) -> str:
        return self.study_instance_uid


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64, unique=True)
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=1024, blank=True)
    body_part_examined = models.CharField(max_length=16, blank=True)
    series_date = models.CharField(max_length=8, blank=True)
    series_time = models.CharField(max_length=16, blank=True)
    number_of_instances = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "series"
        indexes = [models.Index(fields=["study", "series_number"], name="series_study_num_idx")]

    def __str__(self) -> str:
        return self.series_instance_uid


class Instance(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    # Denormalized for study-level instance queries and facility scoping without joins.
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="instances")
    sop_class_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    instance_number = models.IntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(null=True, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    # SHA-256 of the data set without its file meta (group 0002): what dedupe compares.
    dataset_sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=255, unique=True)
    received_at = models.DateTimeField()
    source_ae_title = models.CharField(max_length=16, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    source_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        indexes = [
            models.Index(fields=["series", "instance_number"], name="inst_series_num_idx"),
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid


class ChangeKind(models.TextChoices):
    """Change log kinds (DESIGN §5; after Orthanc's ServerIndexChange)."""

    NEW_PATIENT = "NewPatient"
    NEW_STUDY = "NewStudy"
    NEW_SERIES = "NewSeries"
    NEW_INSTANCE = "NewInstance"
    STABLE_STUDY = "StableStudy"
    DUPLICATE_KEPT_FIRST = "DuplicateKeptFirst"
    DUPLICATE_REJECTED = "DuplicateRejected"
    INSTANCE_OVERWRITTEN = "InstanceOverwritten"


class Change(models.Model):
    """A durable, ordered log of what happened to the index; listeners read it after commit."""

    kind = models.CharField(max_length=32, choices=ChangeKind.choices)
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    study_instance_uid = models.CharField(max_length=64, blank=True)
    series_instance_uid = models.CharField(max_length=64, blank=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "id"], name="change_kind_id_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.sop_instance_uid or self.study_instance_uid}"


class ListenerCursor(models.Model):
    """How far a change-log listener has read, so one that was down catches up."""

    name = models.CharField(max_length=100, unique=True)
    last_change_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at #{self.last_change_id}"


class CommitmentState(models.TextChoices):
    PENDING = "PENDING"  # accepted, not checked yet
    COMMITTED = "COMMITTED"  # every instance is safely stored (event type 1)
    FAILURES = "FAILURES"  # some are not (event type 2)


class StorageCommitment(models.Model):
    """A Storage Commitment request (PS3.4 J) and how it was answered, for operators.

    `references` are the requested [SOP Class UID, SOP Instance UID] pairs; `failures`
    the ones not committed, with their Failure Reason (PS3.3 C.14.1.1). `delivery` says
    how the N-EVENT-REPORT went back ("" while pending).
    """

    transaction_uid = models.CharField(max_length=64, db_index=True)
    calling_ae_title = models.CharField(max_length=16)
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    references = models.JSONField(default=list)
    requested = models.PositiveIntegerField(default=0)
    state = models.CharField(
        max_length=16, choices=CommitmentState.choices, default=CommitmentState.PENDING
    )
    failures = models.JSONField(default=list, blank=True)
    delivery = models.CharField(max_length=32, blank=True)
    delivery_detail = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-received_at"], name="commitment_received_idx")]

    def __str__(self) -> str:
        return f"{self.transaction_uid} from {self.calling_ae_title} ({self.state})"


class InstanceMetadata(models.Model):
    """An instance's DICOM JSON for WADO-RS metadata (PS3.18 F.2), kept so that metadata
    is served from the index and not by re-reading files (DESIGN §5).

    Bulk data appear as BulkDataURIs holding the tag path only (`core.metadata`).
    `dataset_sha256` and `variant` say what the JSON was made from: an overwritten
    instance, or another inline threshold or format, is made again on the next read.
    """

    instance = models.OneToOneField(
        Instance, on_delete=models.CASCADE, primary_key=True, related_name="metadata"
    )
    dataset_sha256 = models.CharField(max_length=64)
    variant = models.CharField(max_length=32)
    dicom_json = models.BinaryField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "instance metadata"

    def __str__(self) -> str:
        return f"metadata of instance {self.instance_id}"
