"""Orthanc as a peer: it stores to us; we query it and retrieve from it through our API.

Real processes only: `noctispro serve` (api, dicom SCP, worker) and Debian's Orthanc on
loopback. Orthanc knows our AE title as modality `noctispro`; we know Orthanc as node
`orthanc`, acting for facility NORTH, allowed to store to us. What arrives is compared
byte for byte (the data set after the file meta) with the file Orthanc was given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from noctispro.core.dicomfile import inspect_file
from tests.factories import make_ct, write
from tests.integration.archive import Archive, archive_at, free_port
from tests.integration.orthanc import Orthanc, orthanc_at

PASSWORD = "Qr-test-pass-42"


def data_set_bytes(data: bytes) -> bytes:
    """The data set of a DICOM file without its preamble and file meta."""
    import io

    layout = inspect_file(io.BytesIO(data), max_bytes=1 << 30, max_depth=32)
    return data[layout.dataset_offset :]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, Orthanc]]:
    root = tmp_path_factory.mktemp("orthanc-peer")
    with archive_at(root / "archive", NOCTISPRO_REMOTE_QUERY_MAX_MATCHES="3") as archive:
        modalities = {"noctispro": ["NOCTISPRO", "127.0.0.1", archive.dicom_port]}
        with orthanc_at(root / "orthanc", modalities=modalities) as orthanc:
            archive.run("facilities", "add", "NORTH", "--name", "North clinic")
            archive.run("facilities", "add", "SOUTH", "--name", "South clinic")
            archive.run(
                "nodes", "add", "orthanc", "--aet", orthanc.ae_title, "--host", "127.0.0.1",
                "--port", str(orthanc.dicom_port), "--facility", "NORTH",
                "--allow", "store,find,move",
            )  # fmt: skip
            archive.run(
                "nodes", "add", "ghost", "--aet", "GHOST", "--host", "127.0.0.1",
                "--port", str(free_port()), "--allow", "store",
            )  # fmt: skip
            archive.run(
                "nodes", "add", "sender-only", "--aet", "SENDONLY", "--host", "127.0.0.1",
                "--port", str(orthanc.dicom_port), "--facility", "NORTH", "--allow", "find",
            )  # fmt: skip
            archive.run("users", "add", "north-tech", "--role", "technologist",
                        "--facility", "NORTH", "--password", PASSWORD)  # fmt: skip
            archive.run("users", "add", "south-tech", "--role", "technologist",
                        "--facility", "SOUTH", "--password", PASSWORD)  # fmt: skip
            archive.run("users", "add", "doc", "--role", "referring", "--all-facilities",
                        "--password", PASSWORD)  # fmt: skip
            archive.start("serve")
            yield archive, orthanc


@pytest.fixture(scope="module")
def api(peers: tuple[Archive, Orthanc]) -> Iterator[httpx.Client]:
    with peers[0].client("north-tech", PASSWORD) as client:
        yield client


def make_study(tmp_path: Path, name: str, *, series: int = 1, per_series: int = 3, **kw: Any):
    study_uid = generate_uid()
    files: list[Path] = []
    for s in range(series):
        series_uid = generate_uid()
        for i in range(per_series):
            ds = make_ct(
                study_uid=study_uid,
                series_uid=series_uid,
                instance_number=i + 1,
                patient_name=name,
                seed=s * 100 + i,
                **kw,
            )
            ds.SeriesNumber = s + 1
            files.append(write(ds, tmp_path / f"{name.replace('^', '_')}-{s}-{i}.dcm"))
    return study_uid, files


def wait_for_job(archive: Archive, job_id: int, timeout: float = 120) -> tuple[str, Any, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = archive.query("SELECT state, result, error FROM jobs_job WHERE id = ?", (job_id,))
        if rows and rows[0][0] in ("succeeded", "failed", "cancelled"):
            import json

            state, result, error = rows[0]
            return state, (json.loads(result) if isinstance(result, str) else result), error
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {rows}\n{archive.output()[-3000:]}")


def stored_data_sets(archive: Archive, study_uid: str) -> dict[str, bytes]:
    rows = archive.query(
        "SELECT i.sop_instance_uid, i.storage_key FROM index_instance i "
        "JOIN index_study s ON s.id = i.study_id WHERE s.study_instance_uid = ?",
        (study_uid,),
    )
    return {uid: data_set_bytes((archive.storage_root / key).read_bytes()) for uid, key in rows}


def study_facility(archive: Archive, study_uid: str) -> str:
    rows = archive.query(
        "SELECT f.code FROM index_study s JOIN accounts_facility f ON f.id = s.facility_id "
        "WHERE s.study_instance_uid = ?",
        (study_uid,),
    )
    return str(rows[0][0]) if rows else ""


# --- Orthanc stores to us --------------------------------------------------------------


def test_orthanc_stores_to_us(peers: tuple[Archive, Orthanc], tmp_path: Path) -> None:
    archive, orthanc = peers
    study_uid, files = make_study(tmp_path, "Pushed^By^Orthanc", per_series=4)
    ids = orthanc.upload(*files)
    job = orthanc.store_to("noctispro", ids)
    assert job.get("FailedInstancesCount", 0) == 0, job
    arrived = stored_data_sets(archive, study_uid)
    originals = {make_uid(p): data_set_bytes(p.read_bytes()) for p in files}
    assert arrived == originals
    assert study_facility(archive, study_uid) == "NORTH"  # the node's facility
    archive.assert_consistent()


def make_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# --- We query Orthanc --------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote_studies(
    peers: tuple[Archive, Orthanc], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[str, list[Path]]]:
    """Studies only Orthanc has (uploaded over its REST API, never sent to us)."""
    _, orthanc = peers
    tmp = tmp_path_factory.mktemp("remote-studies")
    studies = {
        "alpha": make_study(
            tmp, "Remote^Alpha", series=2, per_series=2, patient_id="RA1", study_date="20230105",
            accession="RACC1",
        ),
        "beta": make_study(
            tmp, "Remote^Beta", series=1, per_series=3, patient_id="RB1", study_date="20240610",
            accession="RACC2",
        ),
        "gamma": make_study(
            tmp, "Other^Gamma", series=1, per_series=1, patient_id="RG1", study_date="20240620",
            accession="RACC3",
        ),
    }  # fmt: skip
    for _, files in studies.values():
        orthanc.upload(*files)
    return studies


def query(api: httpx.Client, body: dict[str, Any], node: str = "orthanc") -> httpx.Response:
    return api.post(f"/api/v1/nodes/{node}/query", json=body)


def test_query_orthanc_studies(api: httpx.Client, remote_studies: dict) -> None:
    r = query(api, {"level": "STUDY", "filters": {"PatientName": "Remote^*"}})
    assert r.status_code == 200, r.text
    body = r.json()
    got = {m["StudyInstanceUID"]: m for m in body["matches"]}
    assert set(got) == {remote_studies["alpha"][0], remote_studies["beta"][0]}
    assert body["count"] == 2 and body["truncated"] is False and body["level"] == "STUDY"
    alpha = got[remote_studies["alpha"][0]]
    assert alpha["PatientName"] == "Remote^Alpha"
    assert alpha["PatientID"] == "RA1"
    assert alpha["AccessionNumber"] == "RACC1"
    assert alpha["StudyDate"] == "20230105"
    assert alpha["NumberOfStudyRelatedInstances"] == 4
    assert alpha["NumberOfStudyRelatedSeries"] == 2
    assert alpha["ModalitiesInStudy"] == "CT"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"StudyDate": "20240101-"}, {"beta", "gamma"}),
        ({"StudyDate": "20240601-20240615"}, {"beta"}),
        ({"AccessionNumber": "RACC3"}, {"gamma"}),
        ({"PatientID": "RA1", "ModalitiesInStudy": "CT"}, {"alpha"}),
        ({"ModalitiesInStudy": "MR", "PatientID": "R*"}, set()),
    ],
)
def test_query_orthanc_matching(
    api: httpx.Client, remote_studies: dict, filters: dict[str, str], expected: set[str]
) -> None:
    r = query(
        api, {"level": "STUDY", "filters": {**filters, "PatientID": filters.get("PatientID", "R*")}}
    )
    assert r.status_code == 200, r.text
    uids = {m["StudyInstanceUID"] for m in r.json()["matches"]}
    assert uids == {remote_studies[k][0] for k in expected}


def test_query_orthanc_series_and_images(api: httpx.Client, remote_studies: dict) -> None:
    study_uid = remote_studies["alpha"][0]
    r = query(api, {"level": "SERIES", "filters": {"StudyInstanceUID": study_uid}})
    assert r.status_code == 200, r.text
    series = r.json()["matches"]
    assert len(series) == 2
    assert {s["NumberOfSeriesRelatedInstances"] for s in series} == {2}
    assert {s["Modality"] for s in series} == {"CT"}
    series_uid = series[0]["SeriesInstanceUID"]
    r = query(
        api,
        {
            "level": "IMAGE",
            "filters": {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid},
            "return_keys": ["Rows"],
        },
    )
    assert r.status_code == 200, r.text
    images = r.json()["matches"]
    assert len(images) == 2
    assert {i["SeriesInstanceUID"] for i in images} == {series_uid}
    assert {i["Rows"] for i in images} == {64}


def test_query_orthanc_patient_root(api: httpx.Client, remote_studies: dict) -> None:
    r = query(api, {"level": "PATIENT", "filters": {"PatientID": "RB1"}})
    assert r.status_code == 200, r.text
    [patient] = r.json()["matches"]
    assert patient["PatientName"] == "Remote^Beta"


def test_the_match_cap_cancels_the_query(api: httpx.Client, remote_studies: dict) -> None:
    r = query(api, {"level": "STUDY", "filters": {"PatientID": "*"}})
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 3 and r.json()["truncated"] is True


def test_bad_queries_are_refused_before_anything_is_sent(api: httpx.Client) -> None:
    bad = [
        {"level": "STUDY", "filters": {"NotAKeyword": "x"}},
        {"level": "STUDY", "filters": {"StudyDate": "last week"}},
        {"level": "STUDY", "filters": {"StudyInstanceUID": "1.2.abc"}},
        {"level": "SERIES", "filters": {}},
        {"level": "IMAGE", "filters": {"StudyInstanceUID": "1.2.3"}},
        {"level": "STUDY", "filters": {"QueryRetrieveLevel": "IMAGE"}},
        {"level": "STUDY", "information_model": "patient", "filters": {}},
        {"level": "WARD"},
    ]
    for body in bad:
        r = query(api, body)
        assert r.status_code == 422, (body, r.text)


def test_who_may_query(peers: tuple[Archive, Orthanc], remote_studies: dict) -> None:
    archive, _ = peers
    body = {"level": "STUDY", "filters": {"PatientID": "RA1"}}
    with archive.client("doc", PASSWORD) as doc:
        r = query(doc, body)
        assert r.status_code == 403 and "role" in r.json()["detail"]
    with archive.client("south-tech", PASSWORD) as south:
        r = query(south, body)  # orthanc files into NORTH
        assert r.status_code == 403 and "NORTH" in r.json()["detail"]
        r = south.post(
            "/api/v1/nodes/orthanc/retrieve",
            json={"study_instance_uid": remote_studies["alpha"][0]},
        )
        assert r.status_code == 403
    with archive.client() as admin:
        assert query(admin, body).status_code == 200
        assert query(admin, body, node="nope").status_code == 404


def test_unreachable_node_is_a_502(api: httpx.Client, peers: tuple[Archive, Orthanc]) -> None:
    with peers[0].client() as admin:
        r = query(admin, {"level": "STUDY", "filters": {"PatientID": "X"}}, node="ghost")
    assert r.status_code == 502, r.text
    assert r.json()["kind"] == "unreachable"
    assert "refused or unreachable" in r.json()["detail"]


# --- We retrieve from Orthanc ---------------------------------------------------------


def test_retrieve_a_study_from_orthanc(
    peers: tuple[Archive, Orthanc], api: httpx.Client, remote_studies: dict
) -> None:
    archive, _ = peers
    study_uid, files = remote_studies["alpha"]
    assert stored_data_sets(archive, study_uid) == {}
    r = api.post("/api/v1/nodes/orthanc/retrieve", json={"study_instance_uid": study_uid})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["kind"] == "retrieve_from_node" and started["state"] == "pending"
    assert r.headers["Location"] == f"/api/v1/jobs/{started['job_id']}"
    state, result, error = wait_for_job(archive, started["job_id"])
    assert state == "succeeded", error
    assert result["status"] == "0x0000"
    assert result["completed"] == 4 and result["failed"] == 0
    assert result["expected"] == 4 and result["in_archive"] == 4 and result["new"] == 4
    assert result["missing"] == [] and result["failed_sop_instance_uids"] == []
    originals = {make_uid(p): data_set_bytes(p.read_bytes()) for p in files}
    assert stored_data_sets(archive, study_uid) == originals
    assert study_facility(archive, study_uid) == "NORTH"
    progress = archive.query("SELECT progress FROM jobs_job WHERE id = ?", (started["job_id"],))
    assert progress == [(1.0,)]
    archive.assert_consistent()


def test_retrieve_one_series_from_orthanc(
    peers: tuple[Archive, Orthanc], api: httpx.Client, remote_studies: dict
) -> None:
    archive, _ = peers
    study_uid, files = remote_studies["beta"]
    series_uid = str(
        __import__("pydicom").dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    )
    r = api.post(
        "/api/v1/nodes/orthanc/retrieve",
        json={"study_instance_uid": study_uid, "series_instance_uid": series_uid},
    )
    assert r.status_code == 202, r.text
    state, result, error = wait_for_job(archive, r.json()["job_id"])
    assert state == "succeeded", error
    assert result["completed"] == 3 and result["in_archive"] == 3
    assert set(stored_data_sets(archive, study_uid)) == {make_uid(p) for p in files}


def test_retrieve_of_something_orthanc_lacks(
    peers: tuple[Archive, Orthanc], api: httpx.Client
) -> None:
    archive, _ = peers
    study_uid = generate_uid()
    r = api.post("/api/v1/nodes/orthanc/retrieve", json={"study_instance_uid": study_uid})
    state, _, error = wait_for_job(archive, r.json()["job_id"])
    assert state == "failed"
    assert f"orthanc has no instances of study {study_uid}; nothing to retrieve" in error


def test_retrieve_refused_up_front(api: httpx.Client, peers: tuple[Archive, Orthanc]) -> None:
    archive, _ = peers
    r = api.post("/api/v1/nodes/sender-only/retrieve", json={"study_instance_uid": "1.2.3"})
    assert r.status_code == 409 and "may not store to us" in r.json()["detail"]
    r = api.post("/api/v1/nodes/orthanc/retrieve", json={"study_instance_uid": "not a uid"})
    assert r.status_code == 422
    with archive.client("doc", PASSWORD) as doc:
        r = doc.post("/api/v1/nodes/orthanc/retrieve", json={"study_instance_uid": "1.2.3"})
        assert r.status_code == 403
    count = archive.query(
        "SELECT COUNT(*) FROM jobs_job WHERE CAST(payload AS TEXT) LIKE ?", ("%sender-only%",)
    )
    assert count == [(0,)]


def test_retrieve_from_an_unreachable_node_fails_the_attempt(
    peers: tuple[Archive, Orthanc],
) -> None:
    archive, _ = peers
    with archive.client() as admin:
        r = admin.post("/api/v1/nodes/ghost/retrieve", json={"study_instance_uid": "1.2.3"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [(attempts, error, state)] = archive.query(
            "SELECT attempts, error, state FROM jobs_job WHERE id = ?", (job_id,)
        )
        if error:
            break
        time.sleep(0.3)
    assert "refused or unreachable" in error
    assert attempts >= 1
    assert state in ("pending", "failed")  # retried with backoff


# --- The web page ---------------------------------------------------------------------


def test_query_retrieve_page_rules(peers: tuple[Archive, Orthanc], remote_studies: dict) -> None:
    archive, _ = peers
    assert archive.web_login("doc", PASSWORD).get("/query-retrieve/").status_code == 403
    web = archive.web_login("north-tech", PASSWORD)
    page = web.get("/query-retrieve/", params={"node": "orthanc", "patient_id": "RA1"})
    assert page.status_code == 200
    assert remote_studies["alpha"][0] in page.text
    assert remote_studies["beta"][0] not in page.text
    assert "ghost" not in page.text  # no facility: files into DEFAULT, not north-tech's
    csrf = {"X-CSRFToken": web.cookies["csrftoken"], "Accept": "application/json"}
    r = web.post(
        "/query-retrieve/retrieve",
        data={"node": "ghost", "study_instance_uid": "1.2.3"},
        headers=csrf,
    )
    assert r.status_code == 403 and "DEFAULT" in r.json()["error"]
    r = web.post(
        "/query-retrieve/retrieve",
        data={"node": "orthanc", "study_instance_uid": remote_studies["gamma"][0]},
        headers=csrf,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    wait_for_job(archive, job_id)
    status = web.get(f"/query-retrieve/jobs/{job_id}").json()
    assert status["state"] == "succeeded" and status["result"]["in_archive"] == 1
    assert archive.web_login().get(f"/query-retrieve/jobs/{job_id}").status_code == 200
    south = archive.web_login("south-tech", PASSWORD)
    assert south.get(f"/query-retrieve/jobs/{job_id}").status_code == 404


# --- Orthanc asks us to move a study to it ------------------------------------------------


def test_orthanc_moves_a_study_from_us_to_itself(
    peers: tuple[Archive, Orthanc], tmp_path: Path
) -> None:
    """Our C-MOVE SCP, driven by Orthanc (C-MOVE SCU), sends to Orthanc (C-STORE SCP)."""
    archive, orthanc = peers
    study_uid, files = make_study(
        tmp_path, "Moved^To^Orthanc", series=2, per_series=3, patient_id="MV1"
    )
    # Sent in as Orthanc, so the study is NORTH's, which the node `orthanc` acts for.
    archive.storescu(*files, calling_ae=orthanc.ae_title)
    uids = {make_uid(p) for p in files}
    assert not uids & orthanc.instance_uids()
    r = orthanc.request_move_from("noctispro", study_uid)
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{orthanc.log()}"
    for path in files:
        got = data_set_bytes(orthanc.file_of(make_uid(path)))
        assert got == data_set_bytes(path.read_bytes())
    # A study of another facility is not Orthanc's to move: nothing is sent.
    other_uid, other_files = make_study(tmp_path / "south", "Not^Norths", per_series=2)
    archive.storescu(*other_files, calling_ae="SOUTH_CT")
    r = orthanc.request_move_from("noctispro", other_uid)
    assert not {make_uid(p) for p in other_files} & orthanc.instance_uids()
