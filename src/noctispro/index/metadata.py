"""WADO-RS metadata kept in the index (DESIGN §5: "served from the index").

Each instance's DICOM JSON (`core.metadata.instance_json`) is made once and kept in
`InstanceMetadata`: after commit, a change-log listener hands new and overwritten
instances to a job (the listener runs inside the dispatcher's transaction, and reading
files there would hold the database's write lock against ingest); a read that finds
an instance the job has not reached yet, or JSON made from other bytes or settings,
makes it on the spot and keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import QuerySet

from noctispro.conf import get_settings
from noctispro.core.events import Listener
from noctispro.core.metadata import instance_json
from noctispro.index.models import Change, ChangeKind, Instance, InstanceMetadata
from noctispro.storage import get_blob_store

log = logging.getLogger(__name__)

# Bump when instance_json's output changes: kept JSON of another format is made again.
FORMAT = 1
JOB_KIND = "index.instance_metadata"
JOB_BATCH = 200


def variant() -> str:
    return f"{FORMAT};{get_settings().dicomweb_inline_binary_max}"


@dataclass
class MetadataRow:
    pk: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    storage_key: str
    transfer_syntax_uid: str
    dataset_sha256: str
    dicom_json: bytes | None


_FIELDS = (
    "pk",
    "study__study_instance_uid",
    "series__series_instance_uid",
    "sop_instance_uid",
    "storage_key",
    "transfer_syntax_uid",
    "dataset_sha256",
    "metadata__dicom_json",
    "metadata__dataset_sha256",
    "metadata__variant",
)


def metadata_rows(instances: QuerySet[Instance]) -> list[MetadataRow]:
    """The instances (in the queryset's order) with their JSON, made where it is missing."""
    current = variant()
    rows: list[MetadataRow] = []
    stale: list[MetadataRow] = []
    for (
        pk,
        study,
        series,
        sop,
        key,
        syntax,
        sha,
        body,
        made_from,
        made_with,
    ) in instances.values_list(*_FIELDS):
        fresh = body is not None and made_from == sha and made_with == current
        row = MetadataRow(pk, study, series, sop, key, syntax, sha, bytes(body) if fresh else None)
        rows.append(row)
        if not fresh:
            stale.append(row)
    if stale:
        make_metadata(stale)
    return rows


def make_metadata(rows: Sequence[MetadataRow]) -> None:
    """Make the JSON of `rows` from their stored files, set it on them and keep it.

    An instance whose file cannot be read keeps `dicom_json` None; keeping fails
    quietly (the JSON is still served) if, say, the instance was deleted meanwhile.
    """
    inline_max = get_settings().dicomweb_inline_binary_max
    store = get_blob_store()
    made: list[InstanceMetadata] = []
    current = variant()
    for row in rows:
        try:
            with store.open(row.storage_key) as fp:
                row.dicom_json = instance_json(
                    fp, inline_max=inline_max, transfer_syntax_uid=row.transfer_syntax_uid
                )
        except Exception:
            log.exception("cannot make the metadata of instance %s", row.sop_instance_uid)
            continue
        made.append(
            InstanceMetadata(
                instance_id=row.pk,
                dataset_sha256=row.dataset_sha256,
                variant=current,
                dicom_json=row.dicom_json,
            )
        )
    if not made:
        return
    try:
        with transaction.atomic():
            InstanceMetadata.objects.bulk_create(
                made,
                update_conflicts=True,
                unique_fields=["instance"],
                update_fields=["dataset_sha256", "variant", "dicom_json", "updated_at"],
            )
    except (IntegrityError, DatabaseError) as exc:
        log.warning("metadata of %d instance(s) not kept: %s", len(made), exc)


def make_metadata_for(sop_instance_uids: Iterable[str]) -> int:
    """Make (again) the JSON of these instances where it is missing or stale."""
    uids = list(sop_instance_uids)
    count = 0
    for start in range(0, len(uids), JOB_BATCH):
        batch = uids[start : start + JOB_BATCH]
        count += len(metadata_rows(Instance.objects.filter(sop_instance_uid__in=batch)))
    return count


def _enqueue(changes: Sequence[Change]) -> None:
    from noctispro.jobs import enqueue

    uids = sorted({c.sop_instance_uid for c in changes if c.sop_instance_uid})
    for start in range(0, len(uids), JOB_BATCH):
        enqueue(JOB_KIND, {"sop_instance_uids": uids[start : start + JOB_BATCH]})


INSTANCE_METADATA = Listener(
    name="index.instance_metadata",
    kinds=frozenset({ChangeKind.NEW_INSTANCE, ChangeKind.INSTANCE_OVERWRITTEN}),
    handle=_enqueue,
)
