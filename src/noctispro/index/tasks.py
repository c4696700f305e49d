"""Job kinds over the index (registered through noctispro.jobs.registry.TASK_MODULES)."""

from __future__ import annotations

import hashlib
from typing import Any

from noctispro.conf import get_settings
from noctispro.core.dicomfile import InvalidDicom, inspect_file
from noctispro.index.models import Instance, Study
from noctispro.jobs import JobContext, PermanentJobError, job
from noctispro.storage import get_blob_store

CHUNK = 1024 * 1024


@job("verify_study")
def verify_study(ctx: JobContext, *, study_instance_uid: str) -> dict[str, Any]:
    """Check that every blob of a study is there and still holds the data set we indexed.

    The stored file is our file meta + the data set as received; the index keeps the
    SHA-256 of the data set alone, so the hash starts at the layout's dataset offset.
    A blob that cannot be parsed any more counts as mismatched.
    """
    if not Study.objects.filter(study_instance_uid=study_instance_uid).exists():
        raise PermanentJobError(f"no study {study_instance_uid}")
    instances = list(
        Instance.objects.filter(study__study_instance_uid=study_instance_uid)
        .order_by("series_id", "instance_number", "id")
        .values_list("sop_instance_uid", "storage_key", "dataset_sha256")
    )
    settings = get_settings()
    store = get_blob_store()
    missing: list[str] = []
    mismatched: list[str] = []
    total = len(instances)
    for done, (sop_uid, key, expected) in enumerate(instances, start=1):
        try:
            if not store.exists(key):
                missing.append(sop_uid)
            else:
                with store.open(key) as fp:
                    layout = inspect_file(
                        fp,
                        max_bytes=settings.max_instance_bytes,
                        max_depth=settings.max_sequence_depth,
                    )
                    fp.seek(layout.dataset_offset)
                    sha = hashlib.sha256()
                    while chunk := fp.read(CHUNK):
                        sha.update(chunk)
                if sha.hexdigest() != expected:
                    mismatched.append(sop_uid)
        except FileNotFoundError:
            missing.append(sop_uid)  # deleted between exists() and open()
        except InvalidDicom:
            mismatched.append(sop_uid)
        ctx.progress(done / total, f"{done}/{total} instances")
    return {
        "checked": total,
        "ok": total - len(missing) - len(mismatched),
        "missing": missing,
        "mismatched": mismatched,
    }


@job("index.instance_metadata")
def make_instance_metadata(ctx: JobContext, *, sop_instance_uids: list[str]) -> dict[str, Any]:
    """Make the WADO-RS metadata of new instances (enqueued by the change-log listener)."""
    from noctispro.index.metadata import make_metadata_for

    return {"instances": make_metadata_for(sop_instance_uids)}
