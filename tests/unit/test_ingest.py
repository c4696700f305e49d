"""store_instance: the one way in. Good files land byte-identical; bad ones leave nothing."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from django.db import DatabaseError
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from noctispro.accounts.facilities import forget_cached_facilities
from noctispro.accounts.models import Facility
from noctispro.accounts.services import add_facility
from noctispro.core import ingest
from noctispro.core.ingest import InstanceRejected, Origin, Outcome, Rejection, store_instance
from noctispro.index.models import Change, ChangeKind, Instance, Series, Study
from tests.factories import dataset_bytes, make_ct, to_bytes
from tests.helpers import pydicom_test_file, pydicom_test_files, spool_leftovers, storage_files

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = Origin(channel="test", calling_ae_title="MODALITY1", ip="127.0.0.1")


def store_bytes(data: bytes, origin: Origin = ORIGIN):
    return store_instance(io.BytesIO(data), origin)


def assert_consistent(storage_root: Path) -> None:
    """Every index row has its blob and every blob its row; no spool files remain."""
    keys = set(Instance.objects.values_list("storage_key", flat=True))
    assert storage_files(storage_root) == keys
    assert spool_leftovers(storage_root) == []


@pytest.fixture(autouse=True)
def _clean(storage_root: Path):
    forget_cached_facilities()
    yield
    for p in storage_root.glob("??/??/*.dcm"):
        p.unlink()


# --- good input -----------------------------------------------------------------


def test_stored_file_has_our_meta_and_the_senders_dataset_byte_for_byte(storage_root: Path):
    sent = to_bytes(make_ct(patient_name="Smith^Ann", accession="A1"))
    result = store_bytes(sent)
    assert result.outcome is Outcome.STORED
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    stored = (storage_root / instance.storage_key).read_bytes()
    assert dataset_bytes(stored) == dataset_bytes(sent)
    meta = dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
    assert meta.ImplementationClassUID == "2.25.16618904580167478444180659382348651334"
    assert meta.SourceApplicationEntityTitle == "MODALITY1"
    assert meta.MediaStorageSOPInstanceUID == result.sop_instance_uid
    assert instance.size_bytes == len(stored)
    assert instance.source_ae_title == "MODALITY1"
    assert instance.source_ip == "127.0.0.1"
    assert len(instance.dataset_sha256) == 64
    assert_consistent(storage_root)


def _spool(tmp_path: Path, meta_ae: str) -> tuple[Path, bytes]:
    """A spool file as the DIMSE receive path writes it: our meta for `meta_ae`, then data."""
    ds = make_ct(patient_name="Spooled^Ann")
    data = dataset_bytes(to_bytes(ds))
    meta = ingest.encode_file_meta(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        source_ae_title=meta_ae,
    )
    path = tmp_path / "spool.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + meta + data)
    return path, data


def test_a_handed_over_spool_in_stored_form_becomes_the_blob(storage_root: Path, tmp_path: Path):
    import hashlib

    path, data = _spool(tmp_path, ORIGIN.calling_ae_title)
    expected = path.read_bytes()
    handover = ingest.Handover(path, hashlib.sha256(data).hexdigest())
    result = store_instance(handover, ORIGIN)
    assert result.outcome is Outcome.STORED
    assert handover.consumed and not path.exists()  # renamed, not copied
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    assert (storage_root / instance.storage_key).read_bytes() == expected
    assert instance.dataset_sha256 == hashlib.sha256(data).hexdigest()
    assert instance.size_bytes == len(expected)
    assert_consistent(storage_root)


def test_a_handed_over_spool_with_other_meta_is_copied(storage_root: Path, tmp_path: Path):
    path, data = _spool(tmp_path, "SOMEONE_ELSE")  # not the meta ingest writes for ORIGIN
    handover = ingest.Handover(path)
    result = store_instance(handover, ORIGIN)
    assert result.outcome is Outcome.STORED
    assert not handover.consumed and path.exists()
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    stored = (storage_root / instance.storage_key).read_bytes()
    assert dataset_bytes(stored) == data
    assert dcmread(io.BytesIO(stored)).file_meta.SourceApplicationEntityTitle == "MODALITY1"
    assert_consistent(storage_root)


def test_index_attributes_and_aggregates():
    study_uid, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    for n, series in enumerate([s1, s1, s2]):
        ds = make_ct(study_uid=study_uid, series_uid=series, instance_number=n + 1)
        if series == s2:
            ds.Modality = "MR"
        store_bytes(to_bytes(ds))
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.number_of_series, study.number_of_instances) == (2, 3)
    assert study.modalities_in_study == "CT\\MR"
    assert study.patient_name == "Doe^Jane"
    assert study.patient_name_search == "DOE^JANE"
    assert study.patient_record.number_of_studies == 1
    assert Series.objects.get(series_instance_uid=s1).number_of_instances == 2
    assert study.facility.is_default
    kinds = list(Change.objects.filter(study_instance_uid=study_uid).values_list("kind", flat=True))
    assert kinds.count(ChangeKind.NEW_INSTANCE) == 3
    assert kinds.count(ChangeKind.NEW_SERIES) == 2
    assert kinds.count(ChangeKind.NEW_STUDY) == 1


def test_same_instance_again_is_idempotent(storage_root: Path):
    sent = to_bytes(make_ct())
    assert store_bytes(sent).outcome is Outcome.STORED
    files = storage_files(storage_root)
    assert store_bytes(sent).outcome is Outcome.DUPLICATE
    assert storage_files(storage_root) == files
    assert Instance.objects.count() == 1
    assert Study.objects.get().number_of_instances == 1


def test_dedupe_ignores_the_senders_file_meta():
    ds = make_ct()
    first = to_bytes(ds)
    ds.file_meta.ImplementationClassUID = generate_uid()
    ds.file_meta.SourceApplicationEntityTitle = "OTHER"
    second = to_bytes(ds)
    assert first != second and dataset_bytes(first) == dataset_bytes(second)
    store_bytes(first)
    assert store_bytes(second).outcome is Outcome.DUPLICATE


def _changed_copy(ds):
    ds.StudyDescription = "changed"
    return to_bytes(ds)


def test_duplicate_policy_keep_first(storage_root: Path):
    ds = make_ct()
    original = to_bytes(ds)
    store_bytes(original)
    result = store_bytes(_changed_copy(ds))
    assert result.outcome is Outcome.KEPT_FIRST and result.warning
    instance = Instance.objects.get()
    assert dataset_bytes((storage_root / instance.storage_key).read_bytes()) == dataset_bytes(
        original
    )
    assert Change.objects.filter(kind=ChangeKind.DUPLICATE_KEPT_FIRST).count() == 1
    assert_consistent(storage_root)


def test_duplicate_policy_overwrite(storage_root: Path, settings_env):
    settings_env(NOCTISPRO_DUPLICATE_POLICY="overwrite")
    ds = make_ct()
    store_bytes(to_bytes(ds))
    old_key = Instance.objects.get().storage_key
    changed = _changed_copy(ds)
    assert store_bytes(changed).outcome is Outcome.OVERWRITTEN
    instance = Instance.objects.get()
    assert instance.storage_key != old_key
    assert dataset_bytes((storage_root / instance.storage_key).read_bytes()) == dataset_bytes(
        changed
    )
    assert Change.objects.filter(kind=ChangeKind.INSTANCE_OVERWRITTEN).count() == 1
    assert_consistent(storage_root)


def test_duplicate_policy_reject(storage_root: Path, settings_env):
    settings_env(NOCTISPRO_DUPLICATE_POLICY="reject")
    ds = make_ct()
    store_bytes(to_bytes(ds))
    with pytest.raises(InstanceRejected) as err:
        store_bytes(_changed_copy(ds))
    assert err.value.reason is Rejection.DUPLICATE_REJECTED
    assert Change.objects.filter(kind=ChangeKind.DUPLICATE_REJECTED).count() == 1
    assert_consistent(storage_root)


def test_facility_from_calling_ae_and_conflict_rejected(storage_root: Path):
    add_facility("NORTH", "North clinic", ["NORTH_CT"])
    add_facility("SOUTH", "South clinic", ["SOUTH_CT"])
    study_uid = generate_uid()
    north = Origin(channel="test", calling_ae_title="NORTH_CT")
    south = Origin(channel="test", calling_ae_title="SOUTH_CT")
    assert store_bytes(to_bytes(make_ct(study_uid=study_uid)), north).facility_code == "NORTH"
    with pytest.raises(InstanceRejected) as err:
        store_bytes(to_bytes(make_ct(study_uid=study_uid)), south)
    assert err.value.reason is Rejection.FACILITY_CONFLICT
    assert "another facility" in err.value.message
    assert Instance.objects.count() == 1
    unknown = store_bytes(to_bytes(make_ct()), Origin(channel="test", calling_ae_title="WHO"))
    assert unknown.facility_code == Facility.objects.get(is_default=True).code
    assert_consistent(storage_root)


def test_index_failure_deletes_the_blob(storage_root: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(ingest, "record_new_instance", broken)
    with pytest.raises(InstanceRejected) as err:
        store_bytes(to_bytes(make_ct()))
    assert err.value.reason is Rejection.OUT_OF_RESOURCES
    assert storage_files(storage_root) == set()
    assert_consistent(storage_root)


def test_storage_failure_is_out_of_resources(storage_root: Path, monkeypatch):
    from noctispro.storage import StorageError, get_blob_store

    def full(chunks):
        raise StorageError(28, "No space left on device")

    monkeypatch.setattr(get_blob_store(), "put", full)
    with pytest.raises(InstanceRejected) as err:
        store_bytes(to_bytes(make_ct()))
    assert err.value.reason is Rejection.OUT_OF_RESOURCES
    assert Instance.objects.count() == 0


@pytest.mark.parametrize(
    "name",
    [
        "ExplVR_LitEndNoMeta.dcm",
        "ExplVR_BigEndNoMeta.dcm",
        "image_dfl.dcm",
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
    ],
)
def test_pydicom_files_of_several_encodings(name: str, storage_root: Path):
    path = pydicom_test_file(name)
    result = store_instance(path, ORIGIN)
    assert result.outcome is Outcome.STORED
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    stored = (storage_root / instance.storage_key).read_bytes()
    assert dataset_bytes(stored) == dataset_bytes(Path(path).read_bytes())
    reread = dcmread(io.BytesIO(stored))
    assert reread.SOPInstanceUID == result.sop_instance_uid


def test_every_pydicom_test_file_is_stored_or_rejected_with_a_reason(storage_root: Path):
    seen = {"stored": 0, "rejected": 0, "other": 0}
    reasons = []
    for path in pydicom_test_files():
        try:
            result = store_instance(path, ORIGIN)
        except InstanceRejected as exc:
            reasons.append(exc.message)
            seen["rejected"] += 1
        else:
            seen["stored" if result.outcome is Outcome.STORED else "other"] += 1
    assert seen["stored"] > 50
    assert all(reasons)
    assert_consistent(storage_root)


# --- bad input: one case each, a clear reason, nothing left behind ---------------------


def _ct_bytes(**changes) -> bytes:
    ds = make_ct()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            tag = ds.data_element(keyword).tag
            ds[tag] = DataElement(tag, "UI", value)
    return to_bytes(ds)


def _huge_element_length() -> bytes:
    data = bytearray(to_bytes(make_ct()))
    at = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    struct.pack_into("<I", data, at + 8, 0x7FFFFFF0)
    return bytes(data)


def _nested_sequences(depth: int) -> bytes:
    ds = make_ct()
    for keyword in (
        "PixelData",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "RescaleIntercept",
        "RescaleSlope",
        "WindowCenter",
        "WindowWidth",
    ):
        delattr(ds, keyword)
    head = to_bytes(ds)
    open_sq = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    open_item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close_item = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    close_sq = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return head + (open_sq + open_item) * depth + (close_item + close_sq) * depth


BAD_INPUTS = {
    "not a DICOM file": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, Rejection.NOT_DICOM),
    "a text file renamed .dcm": (b"Patient notes, not an image.\n" * 40, Rejection.NOT_DICOM),
    "empty file": (b"", Rejection.NOT_DICOM),
    "truncated pixel data": (to_bytes(make_ct())[:-1000], Rejection.TRUNCATED),
    "missing SOPInstanceUID": (_ct_bytes(SOPInstanceUID=None), Rejection.MISSING_UID),
    "missing StudyInstanceUID": (_ct_bytes(StudyInstanceUID=None), Rejection.MISSING_UID),
    "UID containing ../": (_ct_bytes(StudyInstanceUID="1.2.3/../../etc"), Rejection.INVALID_UID),
    "UID over 64 characters": (_ct_bytes(SeriesInstanceUID="1." + "2" * 70), Rejection.INVALID_UID),
    "element length far larger than the file": (_huge_element_length(), Rejection.TRUNCATED),
    "300-deep nested sequences": (_nested_sequences(300), Rejection.TOO_DEEP),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_rejected_with_a_reason_and_leaves_nothing(case: str, storage_root: Path):
    data, reason = BAD_INPUTS[case]
    with pytest.raises(InstanceRejected) as err:
        store_bytes(data)
    assert err.value.reason is reason, err.value.message
    assert err.value.message
    assert Instance.objects.count() == 0
    assert Study.objects.count() == 0
    assert_consistent(storage_root)


def test_nesting_within_the_bound_is_accepted():
    assert store_bytes(_nested_sequences(20)).outcome is Outcome.STORED


def test_instance_over_the_size_limit(settings_env, storage_root: Path):
    settings_env(NOCTISPRO_MAX_INSTANCE_BYTES="4096")
    with pytest.raises(InstanceRejected) as err:
        store_bytes(to_bytes(make_ct()))
    assert err.value.reason is Rejection.TOO_LARGE
    assert_consistent(storage_root)


def test_series_filed_under_another_study_is_refused(storage_root: Path):
    series_uid = generate_uid()
    store_bytes(to_bytes(make_ct(series_uid=series_uid)))
    with pytest.raises(InstanceRejected) as err:
        store_bytes(to_bytes(make_ct(series_uid=series_uid)))  # same series, new study
    assert err.value.reason is Rejection.INDEX_CONFLICT
    assert "another study" in err.value.message
    assert Instance.objects.count() == 1
    assert Study.objects.count() == 1  # the second study's rows were rolled back
    assert_consistent(storage_root)
