"""STOW-RS, WADO-RS and WADO-URI against a running `noctispro api` (and worker).

Instances go in with dicomweb-client's STOW-RS; what comes back is compared with the
original files: the data set bytes of retrieved instances, metadata attribute by
attribute with pydicom's reading of the file, bulk data with pydicom's values. Bad
bodies must be refused with a 4xx and leave nothing behind (`assert_consistent`).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.factories import dataset_bytes, make_ct, to_bytes
from tests.helpers import pydicom_test_file
from tests.integration.archive import Archive, archive_at

PASSWORD = "Stow-test-pw-1"
# Explicit and implicit VR, big endian, deflated, encapsulated (JPEG 2000, RLE), sequences,
# waveform and overlay bulk data, an odd-length RGB image.
FILES = [
    "CT_small.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "waveform_ecg.dcm",
    "emri_small_RLE.dcm",
    "SC_rgb_small_odd.dcm",
    "examples_overlay.dcm",
]
DICOM_MULTIPART = 'multipart/related; type="application/dicom"; boundary={}'


@dataclass
class Stowed:
    archive: Archive
    client: DICOMwebClient
    files: dict[str, Path]  # SOP Instance UID → original file


def dicomweb_client(archive: Archive, username: str = "admin", password: str | None = None):
    token = archive.token(username, password)
    return DICOMwebClient(
        url=f"{archive.api}/dicom-web", headers={"Authorization": f"Bearer {token}"}
    )


def start(archive: Archive, *services: str) -> None:
    archive.env["NOCTISPRO_DICOMWEB_BASE_URL"] = f"{archive.api}/dicom-web"
    for service in services:
        archive.start(service)


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def stowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stowed]:
    with archive_at(tmp_path_factory.mktemp("wado") / "archive") as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North")
        for name, role in (("north", "radiologist"), ("referrer", "referring")):
            archive.run(
                "users", "add", name, "--role", role, "--facility", "NORTH", "--password", PASSWORD
            )
        start(archive, "api")
        client = dicomweb_client(archive)
        paths = [pydicom_test_file(name) for name in FILES]
        datasets = [pydicom.dcmread(p) for p in paths]
        files = {str(ds.SOPInstanceUID): p for ds, p in zip(datasets, paths, strict=True)}
        assert len(files) == len(FILES), "the test files must be distinct instances"
        # The files' own bytes (dicomweb-client would send pydicom's re-encoding of them).
        with archive.client() as api:
            r = api.post(
                "/dicom-web/studies",
                content=multipart([("application/dicom", p.read_bytes()) for p in paths]),
                headers={"Content-Type": DICOM_MULTIPART.format("b0undary")},
            )
        assert r.status_code == 200, r.text
        response = Dataset.from_json(r.json())
        stored = {str(item.ReferencedSOPInstanceUID) for item in response.ReferencedSOPSequence}
        assert stored == set(files)
        assert "FailedSOPSequence" not in response
        yield Stowed(archive, client, files)


def multipart_parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response, parsed here (not by the client under test)."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related")
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    body = response.content
    assert body.endswith(f"--{boundary}--\r\n".encode())
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().strip().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        data = data.removesuffix(b"\r\n")
        assert len(data) == int(headers["content-length"])
        parts.append((headers, data))
    return parts


def study_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def series_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def instance_url(path: Path, sop: str) -> str:
    return f"/dicom-web/studies/{study_of(path)}/series/{series_of(path)}/instances/{sop}"


# --- WADO-RS ----------------------------------------------------------------------------------


def test_retrieved_instances_hold_the_data_set_as_sent(stowed: Stowed) -> None:
    with stowed.archive.client() as api:
        for sop, path in stowed.files.items():
            r = api.get(instance_url(path, sop))
            assert r.status_code == 200, r.text
            ((headers, data),) = multipart_parts(r)
            syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            assert headers["content-type"] == f"application/dicom; transfer-syntax={syntax}"
            assert dataset_bytes(data) == dataset_bytes(path.read_bytes()), path.name


def test_study_retrieve_with_dicomweb_client(stowed: Stowed) -> None:
    by_study: dict[str, set[str]] = {}
    for sop, path in stowed.files.items():
        by_study.setdefault(study_of(path), set()).add(sop)
    for study, sops in by_study.items():
        instances = stowed.client.retrieve_study(study)
        assert {str(ds.SOPInstanceUID) for ds in instances} == sops
    sop, path = next(iter(stowed.files.items()))
    series = stowed.client.retrieve_series(study_of(path), series_of(path))
    assert sop in {str(ds.SOPInstanceUID) for ds in series}


def test_transfer_syntax_negotiation(stowed: Stowed) -> None:
    sop, path = next((s, p) for s, p in stowed.files.items() if p.name == "CT_small.dcm")
    url = instance_url(path, sop)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax={}'
    with stowed.archive.client() as api:
        for syntax, code in (
            ("*", 200),
            ("1.2.840.10008.1.2.1", 200),  # as stored
            ("1.2.840.10008.1.2.4.50", 406),  # would need transcoding
        ):
            r = api.get(url, headers={"Accept": accept.format(syntax)})
            assert r.status_code == code, (syntax, r.text)
        assert api.get(url, headers={"Accept": "image/png"}).status_code == 406
        missing = api.get(f"/dicom-web/studies/{study_of(path)}/series/1.2.3/instances/{sop}")
        assert missing.status_code == 404


def _compare(ours: dict[str, Any], theirs: dict[str, Any], ds: Dataset, where: str) -> list[str]:
    """Differences between our DICOM JSON and pydicom's for the same data set."""
    problems = []
    keys = {k for k in {*ours, *theirs} if not k.endswith("0000") and k != "00083002"}
    for key in sorted(keys):
        if key not in ours or key not in theirs:
            problems.append(f"{where}{key}: only in {'ours' if key in ours else 'pydicom'}")
            continue
        mine, other = ours[key], theirs[key]
        if "BulkDataURI" in other or "InlineBinary" in other:
            value = ds[int(key, 16)].value
            if "InlineBinary" in mine:
                if base64.b64decode(mine["InlineBinary"]) != bytes(value):
                    problems.append(f"{where}{key}: InlineBinary differs")
            elif "BulkDataURI" not in mine:
                problems.append(f"{where}{key}: no value")
        elif mine.get("vr") == "SQ":
            items = ds[int(key, 16)].value
            for n, (a, b) in enumerate(
                zip(mine.get("Value", []), other.get("Value", []), strict=False)
            ):
                problems += _compare(a, b, items[n], f"{where}{key}/{n}/")
            if len(mine.get("Value", [])) != len(other.get("Value", [])):
                problems.append(f"{where}{key}: item count")
        elif mine.get("Value") != other.get("Value"):
            problems.append(f"{where}{key}: {mine.get('Value')!r} != {other.get('Value')!r}")
    return problems


def test_metadata_matches_pydicom(stowed: Stowed) -> None:
    for sop, path in stowed.files.items():
        ours = stowed.client.retrieve_instance_metadata(study_of(path), series_of(path), sop)
        ds = pydicom.dcmread(path)
        theirs = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "")
        assert _compare(ours, theirs, ds, "") == [], path.name
        syntax = str(ds.file_meta.TransferSyntaxUID)
        assert ours["00083002"] == {"vr": "UI", "Value": [syntax]}
    study = study_of(pydicom_test_file("CT_small.dcm"))
    metadata = stowed.client.retrieve_study_metadata(study)
    expected = {s for s, p in stowed.files.items() if study_of(p) == study}
    assert {m["00080018"]["Value"][0] for m in metadata} == expected


def test_metadata_is_kept_in_the_index(stowed: Stowed) -> None:
    """Read once (made on demand: no worker runs here), the JSON is in the index."""
    kept = stowed.archive.query(
        "SELECT i.sop_instance_uid FROM index_instancemetadata m "
        "JOIN index_instance i ON i.id = m.instance_id"
    )
    assert {row[0] for row in kept} == set(stowed.files)


def test_bulk_data(stowed: Stowed) -> None:
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "waveform_ecg.dcm", "rtdose.dcm"):
        path = pydicom_test_file(name)
        ds = pydicom.dcmread(path)
        sop = str(ds.SOPInstanceUID)
        metadata = stowed.client.retrieve_instance_metadata(study_of(path), series_of(path), sop)
        bulk = [(k, v["BulkDataURI"]) for k, v in metadata.items() if "BulkDataURI" in v]
        nested = [
            (k, item[t]["BulkDataURI"])
            for k, v in metadata.items()
            if v["vr"] == "SQ"
            for item in v.get("Value", [])
            for t in item
            if "BulkDataURI" in item[t]
        ]
        assert bulk or nested, name
        for key, uri in bulk:
            (value,) = stowed.client.retrieve_bulkdata(uri)
            elem = ds[int(key, 16)]
            want = bytes(elem.value)
            if (
                ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
                and elem.VR == "OW"
            ):
                want = np.frombuffer(want, ">u2").astype("<u2").tobytes()  # octet streams are LE
            assert value == want, (name, key)
        for key, uri in nested:
            (value,) = stowed.client.retrieve_bulkdata(uri)
            assert value, (name, key)


def test_bulk_data_errors(stowed: Stowed) -> None:
    path = pydicom_test_file("JPEG2000.dcm")
    sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    base = instance_url(path, sop)
    with stowed.archive.client() as api:
        assert api.get(f"{base}/bulkdata/7FE00010").status_code == 406  # compressed: frames
        assert api.get(f"{base}/bulkdata/00100010").status_code == 404  # not binary
        assert api.get(f"{base}/bulkdata/0040A730/9/7FE00010").status_code == 404
        assert api.get(f"{base}/bulkdata/not-a-tag").status_code == 400


# --- WADO-URI -------------------------------------------------------------------------------------


def test_wado_uri(stowed: Stowed) -> None:
    sop, path = next(iter(stowed.files.items()))
    params = {
        "requestType": "WADO",
        "studyUID": study_of(path),
        "seriesUID": series_of(path),
        "objectUID": sop,
        "contentType": "application/dicom",
    }
    with stowed.archive.client() as api:
        r = api.get("/wado", params=params)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/dicom")
        assert dataset_bytes(r.content) == dataset_bytes(path.read_bytes())
        assert api.get("/dicom-web/wado", params=params).content == r.content
        jpeg = api.get("/wado", params={**params, "contentType": "image/jpeg"})
        assert jpeg.status_code == 200
        assert jpeg.headers["content-type"] == "image/jpeg"
        assert api.get("/wado", params={**params, "contentType": "image/gif"}).status_code == 406
        assert api.get("/wado", params={**params, "requestType": "X"}).status_code == 400
        assert api.get("/wado", params={**params, "seriesUID": "1.2.3"}).status_code == 404
        del params["objectUID"]
        assert api.get("/wado", params=params).status_code == 400
    with stowed.archive.client("north", PASSWORD) as north:
        assert north.get("/wado", params={**params, "objectUID": sop}).status_code == 404


# --- STOW-RS -------------------------------------------------------------------------------------


def instance_count(archive: Archive) -> int:
    return int(archive.query("SELECT COUNT(*) FROM index_instance")[0][0])


def test_stow_then_qido(stowed: Stowed) -> None:
    study = pydicom.uid.generate_uid()
    datasets = [make_ct(study_uid=study, instance_number=n, rows=8, columns=8) for n in range(3)]
    stowed.client.store_instances(datasets, study_instance_uid=study)
    found = stowed.client.search_for_instances(study_instance_uid=study)
    assert {i["00080018"]["Value"][0] for i in found} == {str(d.SOPInstanceUID) for d in datasets}
    (study_row,) = stowed.client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert study_row["00201208"]["Value"] == [3]
    stowed.archive.assert_consistent()


def test_stow_to_a_study_fails_parts_of_other_studies(stowed: Stowed) -> None:
    study = pydicom.uid.generate_uid()
    ours, other = make_ct(study_uid=study), make_ct()
    body = multipart(
        [("application/dicom", to_bytes(ours)), ("application/dicom", to_bytes(other))]
    )
    with stowed.archive.client() as api:
        r = api.post(
            f"/dicom-web/studies/{study}",
            content=body,
            headers={"Content-Type": DICOM_MULTIPART.format("b0undary")},
        )
    assert r.status_code == 202, r.text
    response = Dataset.from_json(r.json())
    assert [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence] == [
        str(ours.SOPInstanceUID)
    ]
    (failed,) = response.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == other.SOPInstanceUID
    assert failed.FailureReason == 0xA900
    assert response.RetrieveURL.endswith(f"/dicom-web/studies/{study}")
    assert "Warning" in r.headers
    assert not stowed.archive.query(
        "SELECT 1 FROM index_instance WHERE sop_instance_uid = ?", (str(other.SOPInstanceUID),)
    )


def test_stow_all_failed_is_409(stowed: Stowed) -> None:
    before = instance_count(stowed.archive)
    body = multipart([("application/dicom", b"not dicom at all"), ("text/plain", b"hello")])
    with stowed.archive.client() as api:
        r = api.post(
            "/dicom-web/studies",
            content=body,
            headers={"Content-Type": DICOM_MULTIPART.format("b0undary")},
        )
    assert r.status_code == 409, r.text
    reasons = [i.FailureReason for i in Dataset.from_json(r.json()).FailedSOPSequence]
    assert reasons == [0xC000, 0xC000]
    assert instance_count(stowed.archive) == before


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("application/dicom", b"DICM", 415),
        ("multipart/form-data; boundary=b0undary", b"--b0undary--\r\n", 415),
        ('multipart/related; type="application/dicom+json"; boundary=b0undary', b"", 415),
        ('multipart/related; type="application/dicom"', b"--b0undary--\r\n", 400),
        (DICOM_MULTIPART.format("other"), None, 400),  # boundary not in the body
        (DICOM_MULTIPART.format("b0undary"), b"", 400),  # empty
        ("truncated", None, 400),  # no closing boundary
    ],
)
def test_bad_stow_requests_store_nothing(
    stowed: Stowed, content_type: str, body: bytes | None, code: int
) -> None:
    before = instance_count(stowed.archive)
    good = multipart([("application/dicom", to_bytes(make_ct()))])
    if content_type == "truncated":
        content_type, body = DICOM_MULTIPART.format("b0undary"), good[: len(good) - 20]
    with stowed.archive.client() as api:
        r = api.post("/dicom-web/studies", content=good if body is None else body,
                     headers={"Content-Type": content_type})  # fmt: skip
    assert r.status_code == code, r.text
    assert r.json()["detail"]
    assert instance_count(stowed.archive) == before
    stowed.archive.assert_consistent()


def test_ten_thousand_parts_are_refused(stowed: Stowed) -> None:
    before = instance_count(stowed.archive)
    parts = [("application/dicom", to_bytes(make_ct(rows=2, columns=2)))] * 3
    parts += [("application/dicom", b"x" * 10)] * 9997
    started = time.monotonic()
    with stowed.archive.client() as api:
        r = api.post(
            "/dicom-web/studies",
            content=multipart(parts),
            headers={"Content-Type": DICOM_MULTIPART.format("b0undary")},
        )
    assert r.status_code == 413, r.text
    assert "parts" in r.json()["detail"]
    assert instance_count(stowed.archive) == before  # refused whole, nothing stored
    stowed.archive.assert_consistent()
    print(f"10,000-part body refused in {time.monotonic() - started:.2f} s")


def test_stow_roles_and_facilities(stowed: Stowed) -> None:
    body = multipart([("application/dicom", to_bytes(make_ct()))])
    headers = {"Content-Type": DICOM_MULTIPART.format("b0undary")}
    with stowed.archive.client("referrer", PASSWORD) as referrer:
        assert referrer.post("/dicom-web/studies", content=body, headers=headers).status_code == 403
    ds = make_ct()
    with stowed.archive.client("north", PASSWORD) as north:
        r = north.post(
            "/dicom-web/studies",
            content=multipart([("application/dicom", to_bytes(ds))]),
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert north.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/metadata").status_code == 200
        # What the admin stored in the default facility stays out of sight.
        sop, path = next(iter(stowed.files.items()))
        assert north.get(instance_url(path, sop)).status_code == 404
        assert north.get(f"/dicom-web/studies/{study_of(path)}/metadata").status_code == 404
    (facility,) = stowed.archive.query(
        "SELECT f.code FROM index_study s JOIN accounts_facility f ON f.id = s.facility_id "
        "WHERE s.study_instance_uid = ?",
        (str(ds.StudyInstanceUID),),
    )
    assert facility == ("NORTH",)
    with httpx.Client(base_url=stowed.archive.api) as anonymous:
        assert (
            anonymous.post("/dicom-web/studies", content=body, headers=headers).status_code == 401
        )


# --- the change-log listener --------------------------------------------------------------------


def test_the_worker_makes_metadata_before_anyone_asks(new_archive: Archive) -> None:
    start(new_archive, "api", "worker")
    client = dicomweb_client(new_archive)
    datasets = [make_ct(rows=8, columns=8) for _ in range(3)]
    client.store_instances(datasets)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = new_archive.query("SELECT COUNT(*) FROM index_instancemetadata")
        if rows[0][0] == 3:
            break
        time.sleep(0.5)
    assert rows[0][0] == 3, new_archive.output("worker")[-2000:]
    metadata = client.retrieve_instance_metadata(
        str(datasets[0].StudyInstanceUID),
        str(datasets[0].SeriesInstanceUID),
        str(datasets[0].SOPInstanceUID),
    )
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
