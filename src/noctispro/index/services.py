"""Writes to the index. Each function is one short transaction with its change-log rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from noctispro.accounts.models import Facility
from noctispro.core.attributes import InstanceAttributes
from noctispro.index.matching import person_name_key
from noctispro.index.models import Change, ChangeKind, Instance, Study


class IndexConflict(Exception):
    """The instance contradicts what the index holds (e.g. its series is in another study)."""


class FacilityConflict(IndexConflict):
    """The instance's study belongs to another facility."""


@dataclass(frozen=True)
class StoredBlob:
    storage_key: str
    size_bytes: int
    dataset_sha256: str


@dataclass(frozen=True)
class Provenance:
    received_at: datetime
    source_ae_title: str = ""
    source_ip: str | None = None
    source_user_id: int | None = None


@dataclass(frozen=True)
class KnownInstance:
    instance_id: int | None
    study_facility_id: int | None


def find_stored(sop_instance_uid: str, study_instance_uid: str) -> KnownInstance:
    """Is this SOP instance stored already, and which facility owns its study? (one query)"""
    with connection.cursor() as c:
        c.execute(
            "SELECT (SELECT id FROM index_instance WHERE sop_instance_uid = %s),"
            " (SELECT facility_id FROM index_study WHERE study_instance_uid = %s)",
            [sop_instance_uid, study_instance_uid],
        )
        instance_id, facility_id = c.fetchone()
    return KnownInstance(instance_id, facility_id)


def _multi(existing: str, value: str) -> str:
    """Add `value` to a backslash-separated set kept in order of arrival."""
    if not value:
        return existing
    items = existing.split("\\") if existing else []
    if value in items:
        return existing
    return "\\".join([*items, value])


READ_STUDY = (
    "SELECT id, facility_id, modalities_in_study, sop_classes_in_study"
    " FROM index_study WHERE study_instance_uid = %s"
)
LOCK_STUDY = READ_STUDY + " FOR UPDATE"


def record_new_instance(
    facility: Facility, attrs: InstanceAttributes, blob: StoredBlob, provenance: Provenance
) -> int:
    """Insert an instance and upsert its patient, study and series; keep the aggregates.

    Returns the instance id. Raises IntegrityError if the SOP Instance UID was stored
    meanwhile (the caller treats that as a duplicate) and IndexConflict if it
    contradicts the index. This is the ingest hot path, so it speaks SQL through
    Django's connection: the ORM spent ~0.3 ms compiling each of its ten statements,
    more than the database took to run them. Upserts are INSERT ... ON CONFLICT DO
    NOTHING, which SQLite (3.35+) and PostgreSQL both understand; on PostgreSQL the
    study row is locked (FOR UPDATE) so concurrent writers keep its aggregates exact,
    on SQLite the IMMEDIATE transaction already serialises writers.
    """
    ops = connection.ops
    now = ops.adapt_datetimefield_value(provenance.received_at)
    kinds: list[str] = []
    # Upper-casing may lengthen a name (ß → SS); the column holds 324 characters.
    patient_name_key = person_name_key(attrs.patient_name)[:324]
    with transaction.atomic(), connection.cursor() as c:
        c.execute(
            "INSERT INTO index_patient (facility_id, patient_id, issuer_of_patient_id,"
            " patient_name, patient_name_search, patient_birth_date, patient_sex,"
            " number_of_studies, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s)"
            " ON CONFLICT (facility_id, patient_id, issuer_of_patient_id) DO NOTHING"
            " RETURNING id",
            [
                facility.pk,
                attrs.patient_id,
                attrs.issuer_of_patient_id,
                attrs.patient_name,
                patient_name_key,
                attrs.patient_birth_date,
                attrs.patient_sex,
                now,
            ],
        )
        row = c.fetchone()
        if row is None:
            c.execute(
                "SELECT id FROM index_patient WHERE facility_id = %s AND patient_id = %s"
                " AND issuer_of_patient_id = %s",
                [facility.pk, attrs.patient_id, attrs.issuer_of_patient_id],
            )
            row = c.fetchone()
        else:
            kinds.append(ChangeKind.NEW_PATIENT)
        patient_pk = row[0]

        c.execute(
            "INSERT INTO index_study (facility_id, patient_record_id, study_instance_uid,"
            " study_date, study_time, accession_number, study_id, study_description,"
            " referring_physician_name, referring_physician_name_search, patient_name,"
            " patient_name_search, patient_id, issuer_of_patient_id, patient_birth_date,"
            " patient_sex, specific_character_set, modalities_in_study, sop_classes_in_study,"
            " number_of_series, number_of_instances, size_bytes, created_at,"
            " last_received_at, is_stable)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " '', '', 0, 0, 0, %s, %s, %s)"
            " ON CONFLICT (study_instance_uid) DO NOTHING RETURNING id",
            [
                facility.pk,
                patient_pk,
                attrs.study_instance_uid,
                attrs.study_date,
                attrs.study_time,
                attrs.accession_number,
                attrs.study_id,
                attrs.study_description,
                attrs.referring_physician_name,
                person_name_key(attrs.referring_physician_name)[:324],
                attrs.patient_name,
                patient_name_key,
                attrs.patient_id,
                attrs.issuer_of_patient_id,
                attrs.patient_birth_date,
                attrs.patient_sex,
                attrs.specific_character_set,
                now,
                now,
                False,
            ],
        )
        row = c.fetchone()
        new_study = row is not None
        if new_study:
            kinds.append(ChangeKind.NEW_STUDY)
            c.execute(
                "UPDATE index_patient SET number_of_studies = number_of_studies + 1 WHERE id = %s",
                [patient_pk],
            )
        c.execute(
            LOCK_STUDY if connection.features.has_select_for_update else READ_STUDY,
            [attrs.study_instance_uid],
        )
        study_pk, study_facility, modalities, sop_classes = c.fetchone()
        if study_facility != facility.pk:
            raise FacilityConflict(f"study {attrs.study_instance_uid} belongs to another facility")

        c.execute(
            "INSERT INTO index_series (study_id, series_instance_uid, modality, series_number,"
            " series_description, body_part_examined, series_date, series_time,"
            " number_of_instances, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s)"
            " ON CONFLICT (series_instance_uid) DO NOTHING RETURNING id",
            [
                study_pk,
                attrs.series_instance_uid,
                attrs.modality,
                attrs.series_number,
                attrs.series_description,
                attrs.body_part_examined,
                attrs.series_date,
                attrs.series_time,
                now,
            ],
        )
        row = c.fetchone()
        new_series = row is not None
        if new_series:
            kinds.append(ChangeKind.NEW_SERIES)
            series_pk = row[0]
        else:
            c.execute(
                "SELECT id, study_id FROM index_series WHERE series_instance_uid = %s",
                [attrs.series_instance_uid],
            )
            series_pk, series_study = c.fetchone()
            if series_study != study_pk:
                raise IndexConflict(
                    f"series {attrs.series_instance_uid} already belongs to another study"
                )

        c.execute(
            "INSERT INTO index_instance (series_id, study_id, sop_class_uid, sop_instance_uid,"
            " instance_number, number_of_frames, rows, columns, transfer_syntax_uid,"
            " size_bytes, dataset_sha256, storage_key, received_at, source_ae_title,"
            " source_ip, source_user_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            [
                series_pk,
                study_pk,
                attrs.sop_class_uid,
                attrs.sop_instance_uid,
                attrs.instance_number,
                attrs.number_of_frames,
                attrs.rows,
                attrs.columns,
                attrs.transfer_syntax_uid,
                blob.size_bytes,
                blob.dataset_sha256,
                blob.storage_key,
                now,
                provenance.source_ae_title,
                provenance.source_ip,
                provenance.source_user_id,
            ],
        )
        instance_pk = c.fetchone()[0]
        c.execute(
            "UPDATE index_study SET number_of_instances = number_of_instances + 1,"
            " number_of_series = number_of_series + %s, size_bytes = size_bytes + %s,"
            " modalities_in_study = %s, sop_classes_in_study = %s, last_received_at = %s,"
            " is_stable = %s WHERE id = %s",
            [
                1 if new_series else 0,
                blob.size_bytes,
                _multi(modalities, attrs.modality),
                _multi(sop_classes, attrs.sop_class_uid),
                now,
                False,
                study_pk,
            ],
        )
        c.execute(
            "UPDATE index_series SET number_of_instances = number_of_instances + 1 WHERE id = %s",
            [series_pk],
        )
        kinds.append(ChangeKind.NEW_INSTANCE)
        details = ops.adapt_json_value(
            {"size": blob.size_bytes, "sop_class_uid": attrs.sop_class_uid}, None
        )
        empty = ops.adapt_json_value({}, None)
        rows: list[list[Any]] = []
        for kind in kinds:
            rows.append(
                [
                    kind,
                    facility.pk,
                    attrs.study_instance_uid,
                    attrs.series_instance_uid,
                    attrs.sop_instance_uid,
                    details if kind == ChangeKind.NEW_INSTANCE else empty,
                    now,
                ]
            )
        c.executemany(
            "INSERT INTO index_change (kind, facility_id, study_instance_uid,"
            " series_instance_uid, sop_instance_uid, details, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return int(instance_pk)


def record_duplicate(
    instance: Instance, kind: ChangeKind, *, new_sha256: str, provenance: Provenance
) -> None:
    """Audit a SOP Instance UID that arrived again with different bytes."""
    Change.objects.create(
        kind=kind,
        facility_id=instance.study.facility_id,
        study_instance_uid=instance.study.study_instance_uid,
        series_instance_uid=instance.series.series_instance_uid,
        sop_instance_uid=instance.sop_instance_uid,
        details={
            "stored_sha256": instance.dataset_sha256,
            "received_sha256": new_sha256,
            "source_ae_title": provenance.source_ae_title,
            "source_ip": provenance.source_ip,
            "source_user_id": provenance.source_user_id,
        },
    )


def replace_instance_blob(
    instance: Instance, attrs: InstanceAttributes, blob: StoredBlob, provenance: Provenance
) -> str:
    """Point an instance at a new blob (duplicate policy `overwrite`); return the old key."""
    with transaction.atomic():
        locked = (
            Instance.objects.select_for_update()
            .select_related("study", "series")
            .get(pk=instance.pk)
        )
        old_key = locked.storage_key
        delta = blob.size_bytes - locked.size_bytes
        Instance.objects.filter(pk=locked.pk).update(
            storage_key=blob.storage_key,
            size_bytes=blob.size_bytes,
            dataset_sha256=blob.dataset_sha256,
            transfer_syntax_uid=attrs.transfer_syntax_uid,
            instance_number=attrs.instance_number,
            number_of_frames=attrs.number_of_frames,
            rows=attrs.rows,
            columns=attrs.columns,
            received_at=provenance.received_at,
            source_ae_title=provenance.source_ae_title,
            source_ip=provenance.source_ip,
            source_user_id=provenance.source_user_id,
        )
        Study.objects.filter(pk=locked.study_id).update(
            size_bytes=F("size_bytes") + delta,
            last_received_at=provenance.received_at,
            is_stable=False,
        )
        Change.objects.create(
            kind=ChangeKind.INSTANCE_OVERWRITTEN,
            facility_id=locked.study.facility_id,
            study_instance_uid=locked.study.study_instance_uid,
            series_instance_uid=locked.series.series_instance_uid,
            sop_instance_uid=locked.sop_instance_uid,
            details={
                "stored_sha256": locked.dataset_sha256,
                "received_sha256": blob.dataset_sha256,
            },
        )
    return old_key


def mark_stable_studies(stable_age_seconds: int, now: datetime | None = None) -> int:
    """Flag studies that have received nothing for the stable age; log StableStudy for each.

    After Orthanc's StableAge: listeners that act on a whole study (AI, routing) wait
    for this instead of reacting to every instance.
    """
    cutoff = (now or timezone.now()) - timedelta(seconds=stable_age_seconds)
    marked = 0
    candidates = list(
        Study.objects.filter(is_stable=False, last_received_at__lte=cutoff).values_list(
            "pk", flat=True
        )[:500]
    )
    for pk in candidates:
        with transaction.atomic():
            updated = Study.objects.filter(
                pk=pk, is_stable=False, last_received_at__lte=cutoff
            ).update(is_stable=True)
            if not updated:
                continue
            study = Study.objects.get(pk=pk)
            Change.objects.create(
                kind=ChangeKind.STABLE_STUDY,
                facility_id=study.facility_id,
                study_instance_uid=study.study_instance_uid,
                details={
                    "number_of_series": study.number_of_series,
                    "number_of_instances": study.number_of_instances,
                },
            )
            marked += 1
    return marked
