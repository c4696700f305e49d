"""Storage commitment: is each instance really and safely stored? (PS3.4 J.3)

Protocol-neutral; the DIMSE adapter is `dimse/commitment.py`. For each referenced
(SOP Class UID, SOP Instance UID) `check_stored` looks at what is there, not at what
was once acknowledged:

- the index row exists and its study is visible to the requester (scope_studies: an
  instance of another facility is, to this requester, not there at all);
- its SOP Class is the referenced one;
- the blob exists, has the recorded size, is a structurally sound DICOM file, and the
  data set after its file meta hashes to the SHA-256 ingest recorded.

Requests and their outcome are kept as `StorageCommitment` rows so an operator can
see who asked for what and how it was answered.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from django.utils import timezone

from noctispro.accounts.scoping import Principal, scope_studies
from noctispro.conf import get_settings
from noctispro.core.dicomfile import InvalidDicom, inspect_file
from noctispro.index.models import CommitmentState, Instance, StorageCommitment
from noctispro.storage import get_blob_store

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
# UIDs per index query (keeps the IN list well under SQLite's parameter limit).
BATCH = 500


class Verdict(StrEnum):
    STORED = "stored"
    NO_SUCH_INSTANCE = "no-such-instance"
    CLASS_INSTANCE_CONFLICT = "class-instance-conflict"
    DAMAGED = "damaged"  # the blob is missing, unreadable or not what was stored


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Check:
    reference: Reference
    verdict: Verdict
    detail: str = ""

    @property
    def stored(self) -> bool:
        return self.verdict is Verdict.STORED


def check_stored(principal: Principal, references: Sequence[Reference]) -> list[Check]:
    """One Check per reference, in order (a reference asked twice is checked once)."""
    rows = _visible_instances(principal, {r.sop_instance_uid for r in references})
    blob_problems: dict[str, str] = {}
    checks = []
    for ref in references:
        instance = rows.get(ref.sop_instance_uid)
        if instance is None:
            checks.append(Check(ref, Verdict.NO_SUCH_INSTANCE, "not in the archive"))
            continue
        if instance.sop_class_uid != ref.sop_class_uid:
            detail = f"stored as SOP class {instance.sop_class_uid}"
            checks.append(Check(ref, Verdict.CLASS_INSTANCE_CONFLICT, detail))
            continue
        if ref.sop_instance_uid not in blob_problems:
            blob_problems[ref.sop_instance_uid] = blob_problem(instance)
        problem = blob_problems[ref.sop_instance_uid]
        if problem:
            log.error(
                "storage commitment: instance %s is damaged: %s", ref.sop_instance_uid, problem
            )
            checks.append(Check(ref, Verdict.DAMAGED, problem))
        else:
            checks.append(Check(ref, Verdict.STORED))
    return checks


def _visible_instances(principal: Principal, uids: Iterable[str]) -> dict[str, Instance]:
    visible = Instance.objects.filter(study__in=scope_studies(principal)).only(
        "sop_instance_uid", "sop_class_uid", "storage_key", "size_bytes", "dataset_sha256"
    )
    ordered = sorted(uids)
    rows: dict[str, Instance] = {}
    for start in range(0, len(ordered), BATCH):
        batch = visible.filter(sop_instance_uid__in=ordered[start : start + BATCH])
        rows.update((i.sop_instance_uid, i) for i in batch)
    return rows


def blob_problem(instance: Instance) -> str:
    """What is wrong with an instance's blob ("" when it is exactly what was stored)."""
    store = get_blob_store()
    settings = get_settings()
    try:
        size = store.size(instance.storage_key)
        if size != instance.size_bytes:
            return f"stored file is {size} bytes, {instance.size_bytes} were stored"
        with store.open(instance.storage_key) as fp:
            layout = inspect_file(
                fp, max_bytes=settings.max_instance_bytes, max_depth=settings.max_sequence_depth
            )
            fp.seek(layout.dataset_offset)
            sha = hashlib.sha256()
            while chunk := fp.read(CHUNK):
                sha.update(chunk)
    except FileNotFoundError:
        return "stored file is missing"
    except InvalidDicom as exc:
        return f"stored file is damaged: {exc.message}"
    except OSError as exc:
        return f"stored file cannot be read: {exc}"
    if sha.hexdigest() != instance.dataset_sha256:
        return "stored file does not have the SHA-256 recorded at ingest"
    return ""


def record_request(
    transaction_uid: str,
    calling_ae_title: str,
    principal: Principal,
    references: Sequence[Reference],
) -> StorageCommitment:
    facility_ids = sorted(principal.facility_ids or [])
    return StorageCommitment.objects.create(
        transaction_uid=transaction_uid,
        calling_ae_title=calling_ae_title[:16],
        facility_id=facility_ids[0] if len(facility_ids) == 1 else None,
        references=[[r.sop_class_uid, r.sop_instance_uid] for r in references],
        requested=len(references),
    )


def references_of(commitment: StorageCommitment) -> list[Reference]:
    return [Reference(cls, uid) for cls, uid in commitment.references]


def record_outcome(commitment: StorageCommitment, checks: Sequence[Check]) -> None:
    failed = [c for c in checks if not c.stored]
    commitment.state = CommitmentState.FAILURES if failed else CommitmentState.COMMITTED
    commitment.failures = [
        {
            "sop_class_uid": c.reference.sop_class_uid,
            "sop_instance_uid": c.reference.sop_instance_uid,
            "verdict": c.verdict.value,
            "detail": c.detail,
        }
        for c in failed
    ]
    commitment.save(update_fields=["state", "failures"])


def record_delivery(commitment: StorageCommitment, delivery: str, detail: str = "") -> None:
    commitment.delivery = delivery
    commitment.delivery_detail = detail[:255]
    commitment.reported_at = timezone.now()
    commitment.save(update_fields=["delivery", "delivery_detail", "reported_at"])
