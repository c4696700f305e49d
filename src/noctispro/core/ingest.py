"""store_instance(): the one way an instance enters the archive (DESIGN §5).

Order: check the structure with bounds → read the header → validate UIDs → write the
blob (our file meta + the data set exactly as received) under a server-chosen key →
one index transaction with its change-log rows → only then report success. If the
index step fails the blob is deleted, so nothing is half-written.

Duplicates are judged by the SHA-256 of the data set without its file meta (group
0002), because every sender writes its own file meta.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from noctispro import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctispro.accounts.facilities import facility_for_ae
from noctispro.accounts.models import Facility
from noctispro.conf import DuplicatePolicy, get_settings
from noctispro.core.attributes import (
    INDEX_TAGS,
    InstanceAttributes,
    MalformedUID,
    MissingUID,
    read_attributes,
)
from noctispro.core.dicomfile import FileLayout, InvalidDicom, Problem, inspect_file
from noctispro.index.models import ChangeKind, Instance
from noctispro.index.services import (
    FacilityConflict,
    IndexConflict,
    Provenance,
    StoredBlob,
    find_stored,
    record_duplicate,
    record_new_instance,
    replace_instance_blob,
)
from noctispro.storage import StorageError, get_blob_store

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class Rejection(StrEnum):
    """Why an instance was not stored. Adapters map these to DIMSE statuses / HTTP codes."""

    NOT_DICOM = "not-dicom"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    TOO_DEEP = "too-deep"
    TOO_LARGE = "too-large"
    MISSING_UID = "missing-uid"
    INVALID_UID = "invalid-uid"
    FACILITY_CONFLICT = "facility-conflict"
    INDEX_CONFLICT = "index-conflict"
    DUPLICATE_REJECTED = "duplicate-rejected"
    OUT_OF_RESOURCES = "out-of-resources"


_PROBLEM_TO_REJECTION = {
    Problem.NOT_DICOM: Rejection.NOT_DICOM,
    Problem.MALFORMED: Rejection.MALFORMED,
    Problem.TRUNCATED: Rejection.TRUNCATED,
    Problem.TOO_DEEP: Rejection.TOO_DEEP,
    Problem.TOO_LARGE: Rejection.TOO_LARGE,
}


class InstanceRejected(Exception):
    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same data set: nothing written
    KEPT_FIRST = "kept-first"  # same UID, different data set: the stored one is kept
    OVERWRITTEN = "overwritten"  # same UID, different data set: replaced (policy)


@dataclass(frozen=True)
class Origin:
    """Where an instance comes from; kept on the instance row."""

    channel: str  # "dimse", "upload", "import", "stow", ...
    calling_ae_title: str = ""
    ip: str | None = None
    user_id: int | None = None
    facility: Facility | None = None  # chosen by an authorised uploader


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    facility_code: str
    warning: str = ""


@dataclass
class Handover:
    """A spool file the caller gives up to ingest, and what it knows of it.

    The DIMSE receive path writes each data set behind the very file meta ingest would
    write (`file_meta_bytes`) and hashes it as it arrives; when the header read here
    agrees, the spool file becomes the blob by a rename: no second copy of the bytes,
    no second hash. Anything else is stored by copying, as from any other source.
    """

    path: Path
    dataset_sha256: str | None = None
    #: Set by ingest when the file became a blob: it is no longer the caller's to delete.
    consumed: bool = False


def store_instance(source: BinaryIO | str | Path | Handover, origin: Origin) -> StoreResult:
    """Store one DICOM instance from a seekable file (already spooled to disk)."""
    if isinstance(source, Handover):
        with open(source.path, "rb") as fp:
            return _store(fp, origin, source)
    if isinstance(source, str | Path):
        with open(source, "rb") as fp:
            return _store(fp, origin)
    return _store(source, origin)


def _store(fp: BinaryIO, origin: Origin, handover: Handover | None = None) -> StoreResult:
    settings = get_settings()
    try:
        layout = inspect_file(
            fp,
            max_bytes=settings.max_instance_bytes,
            max_depth=settings.max_sequence_depth,
            collect=INDEX_TAGS,
        )
        attrs = read_attributes(layout)
    except InvalidDicom as exc:
        raise InstanceRejected(_PROBLEM_TO_REJECTION[exc.problem], exc.message) from exc
    except MissingUID as exc:
        raise InstanceRejected(Rejection.MISSING_UID, str(exc)) from exc
    except MalformedUID as exc:
        raise InstanceRejected(Rejection.INVALID_UID, str(exc)) from exc

    facility = origin.facility or facility_for_ae(origin.calling_ae_title)
    provenance = Provenance(
        received_at=timezone.now(),
        source_ae_title=origin.calling_ae_title[:16],
        source_ip=origin.ip,
        source_user_id=origin.user_id,
    )
    try:
        for _attempt in range(3):
            known = find_stored(attrs.sop_instance_uid, attrs.study_instance_uid)
            if known.instance_id is not None:
                existing = Instance.objects.select_related("study", "series").get(
                    pk=known.instance_id
                )
                return _store_again(
                    fp, layout, attrs, existing, facility, provenance, origin, handover
                )
            if known.study_facility_id is not None and known.study_facility_id != facility.pk:
                raise InstanceRejected(
                    Rejection.FACILITY_CONFLICT,
                    f"study {attrs.study_instance_uid} belongs to another facility",
                )
            blob = _write_blob(fp, layout, attrs, origin, handover)
            try:
                record_new_instance(facility, attrs, blob, provenance)
            except IntegrityError as exc:
                get_blob_store().delete(blob.storage_key)
                if find_stored(attrs.sop_instance_uid, "").instance_id is not None:
                    continue  # stored meanwhile by another association: judge it as a duplicate
                raise InstanceRejected(
                    Rejection.INDEX_CONFLICT, f"the index refused the instance: {exc}"
                ) from exc
            except FacilityConflict as exc:
                get_blob_store().delete(blob.storage_key)
                raise InstanceRejected(Rejection.FACILITY_CONFLICT, str(exc)) from exc
            except IndexConflict as exc:
                get_blob_store().delete(blob.storage_key)
                raise InstanceRejected(Rejection.INDEX_CONFLICT, str(exc)) from exc
            except BaseException:
                get_blob_store().delete(blob.storage_key)
                raise
            return _result(Outcome.STORED, attrs, facility)
        raise InstanceRejected(
            Rejection.OUT_OF_RESOURCES, "instance kept changing while it was being stored"
        )
    except StorageError as exc:
        raise InstanceRejected(Rejection.OUT_OF_RESOURCES, f"storage failed: {exc}") from exc
    except DatabaseError as exc:
        log.exception("index write failed for %s", attrs.sop_instance_uid)
        raise InstanceRejected(
            Rejection.OUT_OF_RESOURCES, f"index unavailable: {type(exc).__name__}"
        ) from exc


def _store_again(
    fp: BinaryIO,
    layout: FileLayout,
    attrs: InstanceAttributes,
    existing: Instance,
    facility: Facility,
    provenance: Provenance,
    origin: Origin,
    handover: Handover | None,
) -> StoreResult:
    """A SOP Instance UID that is already stored: idempotent, or the duplicate policy."""
    if existing.study.facility_id != facility.pk:
        raise InstanceRejected(
            Rejection.FACILITY_CONFLICT,
            f"SOP instance {attrs.sop_instance_uid} belongs to another facility",
        )
    received = (handover.dataset_sha256 if handover else None) or _dataset_sha256(fp, layout)
    if received == existing.dataset_sha256:
        return _result(Outcome.DUPLICATE, attrs, facility)

    policy = get_settings().duplicate_policy
    if policy is DuplicatePolicy.REJECT:
        record_duplicate(
            existing, ChangeKind.DUPLICATE_REJECTED, new_sha256=received, provenance=provenance
        )
        raise InstanceRejected(
            Rejection.DUPLICATE_REJECTED,
            f"SOP instance {attrs.sop_instance_uid} is already stored with different content",
        )
    if policy is DuplicatePolicy.KEEP_FIRST:
        record_duplicate(
            existing, ChangeKind.DUPLICATE_KEPT_FIRST, new_sha256=received, provenance=provenance
        )
        log.warning(
            "SOP instance %s arrived again with different content from %s; kept the first",
            attrs.sop_instance_uid,
            origin.calling_ae_title or origin.user_id or origin.channel,
        )
        return _result(
            Outcome.KEPT_FIRST,
            attrs,
            facility,
            warning="already stored with different content; the stored instance was kept",
        )
    blob = _write_blob(fp, layout, attrs, origin, handover)
    try:
        old_key = replace_instance_blob(existing, attrs, blob, provenance)
    except BaseException:
        get_blob_store().delete(blob.storage_key)
        raise
    get_blob_store().delete(old_key)
    return _result(Outcome.OVERWRITTEN, attrs, facility, warning="replaced the stored instance")


def _result(
    outcome: Outcome, attrs: InstanceAttributes, facility: Facility, warning: str = ""
) -> StoreResult:
    return StoreResult(
        outcome=outcome,
        sop_class_uid=attrs.sop_class_uid,
        sop_instance_uid=attrs.sop_instance_uid,
        study_instance_uid=attrs.study_instance_uid,
        series_instance_uid=attrs.series_instance_uid,
        transfer_syntax_uid=attrs.transfer_syntax_uid,
        facility_code=facility.code,
        warning=warning,
    )


def file_meta_bytes(attrs: InstanceAttributes, source_ae_title: str = "") -> bytes:
    """Preamble, prefix and our file meta (PS3.10 7.1): the receiver writes group 0002."""
    meta = encode_file_meta(
        sop_class_uid=attrs.sop_class_uid,
        sop_instance_uid=attrs.sop_instance_uid,
        transfer_syntax_uid=attrs.transfer_syntax_uid,
        source_ae_title=source_ae_title,
    )
    return b"\x00" * 128 + b"DICM" + meta


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str = "",
) -> bytes:
    """Group 0002 in explicit VR little endian, as PS3.10 requires.

    Encoded here directly: pydicom's writer took 0.35 ms per instance for six elements.
    """
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax_uid)),
        _meta_element(0x0012, b"UI", _uid_bytes(IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME.encode(), b" ")),
    ]
    if source_ae_title:
        ae = source_ae_title.encode("ascii", "replace")[:16]
        elements.append(_meta_element(0x0016, b"AE", _padded(ae, b" ")))
    body = b"".join(elements)
    return _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _uid_bytes(uid: str) -> bytes:
    return _padded(uid.encode("ascii", "replace")[:64], b"\x00")


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _dataset_chunks(fp: BinaryIO, layout: FileLayout) -> Iterator[bytes]:
    fp.seek(layout.dataset_offset)
    while chunk := fp.read(CHUNK):
        yield chunk


def _dataset_sha256(fp: BinaryIO, layout: FileLayout) -> str:
    sha = hashlib.sha256()
    for chunk in _dataset_chunks(fp, layout):
        sha.update(chunk)
    return sha.hexdigest()


def _write_blob(
    fp: BinaryIO,
    layout: FileLayout,
    attrs: InstanceAttributes,
    origin: Origin,
    handover: Handover | None = None,
) -> StoredBlob:
    store = get_blob_store()
    adopt = getattr(store, "adopt", None)
    if handover is not None and not handover.consumed and adopt is not None:
        meta = file_meta_bytes(attrs, origin.calling_ae_title)
        fp.seek(0)
        if len(meta) == layout.dataset_offset and fp.read(len(meta)) == meta:
            digest = handover.dataset_sha256 or _dataset_sha256(fp, layout)
            try:
                key = adopt(handover.path)
            except StorageError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            else:
                handover.consumed = True
                return StoredBlob(storage_key=key, size_bytes=layout.size, dataset_sha256=digest)
    sha = hashlib.sha256()
    size = 0

    def chunks() -> Iterator[bytes]:
        nonlocal size
        meta = file_meta_bytes(attrs, origin.calling_ae_title)
        size += len(meta)
        yield meta
        for chunk in _dataset_chunks(fp, layout):
            sha.update(chunk)
            size += len(chunk)
            yield chunk

    key = store.put(chunks())
    return StoredBlob(storage_key=key, size_bytes=size, dataset_sha256=sha.hexdigest())
