"""Modality Worklist (PS3.4 K) against a running `noctispro serve`.

Orders are created over HTTP (`POST /api/v1/orders`); modalities query with DCMTK
`findscu -W` (sequence keys with `-k`) and with pynetdicom for the character sets.
Expected results are the orders as the test created them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from tests.factories import make_ct, write
from tests.integration.archive import Archive
from tests.integration.conftest import need

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SPS = "ScheduledProcedureStepSequence"
WEST_CT, WEST_MR, EAST = "WEST_CT", "WEST_MR", "EAST_CT"
ORDERS = {
    # patient name: (facility, modality, station, date, time, performing physician)
    "Worklist^Wendy": ("WEST", "CT", WEST_CT, "20261204", "1030", "Smith^Anna"),
    "Worklist^Walter": ("WEST", "MR", WEST_MR, "20261205", "0800", "Jones^Bob"),
    "Other^Olga": ("WEST", "CT", WEST_CT, "20261210", "1500", ""),
    "Müller^Jürgen": ("WEST", "CT", WEST_CT, "20261204", "1400", "Bartók^Béla"),
    "山田^太郎=やまだ^たろう": ("WEST", "US", WEST_CT, "20261206", "0915", ""),
    "Done^Dora": ("WEST", "CT", WEST_CT, "20261204", "0900", ""),
    "East^Eve": ("EAST", "CT", WEST_CT, "20261204", "1030", ""),
}
OPEN_WEST = {n for n, o in ORDERS.items() if o[0] == "WEST"} - {"Done^Dora"}
# The step keys asked in the findscu queries (each may get a value in one query).
STEP_KEYS = [
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepStatus",
    "ScheduledProcedureStepID",
    "ScheduledStationName",  # not held: returned empty
]
TOP_KEYS = ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"]


@pytest.fixture(scope="module")
def worklist(running_archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    a = running_archive
    a.run("facilities", "add", "WEST", "--name", "West clinic", "--ae", WEST_CT, "--ae", WEST_MR)
    a.run("facilities", "add", "EAST", "--name", "East clinic", "--ae", EAST)
    with a.client() as api:
        for n, (name, (facility, modality, station, day, at, physician)) in enumerate(
            ORDERS.items()
        ):
            created = api.post(
                "/api/v1/orders",
                json={
                    "facility": facility,
                    "patient_name": name,
                    "patient_id": f"MWL-{n}",
                    "modality": modality,
                    "scheduled_station_ae_title": station,
                    "scheduled_start_date": day,
                    "scheduled_start_time": at,
                    "scheduled_performing_physician_name": physician,
                    "accession_number": f"MWL{n:04d}",
                },
            )
            assert created.status_code == 201, created.text
        # Done^Dora's images arrive: the order is completed by the archive itself.
        done = next(i for i, name in enumerate(ORDERS) if name == "Done^Dora")
        image = make_ct(accession=f"MWL{done:04d}", patient_name="Done^Dora")
        a.storescu(write(image, tmp_path_factory.mktemp("dora") / "d.dcm"), calling_ae=WEST_CT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            completed = api.get("/api/v1/orders", params={"status": "COMPLETED"}).json()
            if completed:
                break
            time.sleep(0.3)
        assert [o["patient_name"] for o in completed] == ["Done^Dora"]
    return a


def findscu(
    a: Archive, out: Path, *keys: str, calling_ae: str = WEST_CT, step: bool = True
) -> list[Dataset]:
    """`findscu -W` with the return keys above and `keys` (KEY=VALUE, step keys as
    `SPS.Key=VALUE`); the responses, extracted to files, read back with pydicom."""
    out.mkdir(parents=True, exist_ok=True)
    given = dict(k.split("=", 1) for k in keys)
    args = [need("findscu"), "-W", "-aet", calling_ae, "-aec", "NOCTISPRO", "-X", "-od", str(out)]
    args += ["-k", "SpecificCharacterSet=ISO_IR 192"]
    for key in TOP_KEYS:
        args += ["-k", f"{key}={given.get(key, '')}"]
    if step:
        for key in STEP_KEYS:
            args += ["-k", f"{SPS}[0].{key}={given.get(f'SPS.{key}', '')}"]
    args += ["127.0.0.1", str(a.dicom_port)]
    result = subprocess.run(args, env=DCMTK_ENV, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [pydicom.dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


def names(responses: list[Dataset]) -> set[str]:
    return {str(r.PatientName) for r in responses}


def test_all_open_orders_of_the_callers_facility(worklist: Archive, tmp_path: Path) -> None:
    responses = findscu(worklist, tmp_path)
    assert names(responses) == OPEN_WEST  # not Done^Dora (completed), not East^Eve
    for r in responses:
        _, modality, station, day, at, physician = ORDERS[str(r.PatientName)]
        # Exactly the requested keys: the top-level ones, the sequence, and the charset
        # (requested ISO_IR 192; ASCII-only answers carry none).
        keywords = {e.keyword for e in r if e.tag.group != 0x0002}
        assert keywords - {"SpecificCharacterSet"} == {*TOP_KEYS, SPS}
        assert len(r[SPS].value) == 1
        step = r[SPS][0]
        assert [e.keyword for e in step] == sorted(
            STEP_KEYS, key=lambda k: pydicom.datadict.tag_for_keyword(k)
        )
        assert (step.Modality, step.ScheduledStationAETitle) == (modality, station)
        assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
            day,
            at,
        )
        assert str(step.ScheduledPerformingPhysicianName or "") == physician
        assert step.ScheduledProcedureStepStatus == "SCHEDULED"
        assert step.ScheduledStationName in (None, "")
        assert r.StudyInstanceUID and r.AccessionNumber.startswith("MWL")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["SPS.Modality=MR"], {"Worklist^Walter"}),
        (["SPS.ScheduledStationAETitle=WEST_MR"], {"Worklist^Walter"}),
        (["SPS.ScheduledStationAETitle=WEST_C?"], OPEN_WEST - {"Worklist^Walter"}),
        (
            ["SPS.ScheduledProcedureStepStartDate=20261204-20261205"],
            {"Worklist^Wendy", "Worklist^Walter", "Müller^Jürgen"},
        ),
        (
            ["SPS.ScheduledProcedureStepStartDate=20261206-"],
            {"山田^太郎=やまだ^たろう", "Other^Olga"},
        ),
        (
            [
                "SPS.ScheduledProcedureStepStartDate=20261204",
                "SPS.ScheduledProcedureStepStartTime=1000-1500",
            ],
            {"Worklist^Wendy", "Müller^Jürgen"},
        ),
        (["PatientName=work*"], {"Worklist^Wendy", "Worklist^Walter"}),
        (["PatientName=W*^W?ndy"], {"Worklist^Wendy"}),
        (["PatientName=山田*"], {"山田^太郎=やまだ^たろう"}),
        (["SPS.ScheduledPerformingPhysicianName=smith*"], {"Worklist^Wendy"}),
        (["SPS.ScheduledProcedureStepStatus=COMPLETED"], {"Done^Dora"}),
        (["PatientID=MWL-1"], {"Worklist^Walter"}),
        (["AccessionNumber=MWL0002"], {"Other^Olga"}),
        (["SPS.Modality=CT", "PatientName=Other*"], {"Other^Olga"}),
        (["SPS.Modality=NM"], set()),
    ],
)
def test_matching(worklist: Archive, tmp_path: Path, keys: list[str], expected: set[str]) -> None:
    assert names(findscu(worklist, tmp_path, *keys)) == expected


def test_by_study_instance_uid_and_without_a_step_sequence(
    worklist: Archive, tmp_path: Path
) -> None:
    with worklist.client() as api:
        walter = next(
            o for o in api.get("/api/v1/orders").json() if o["patient_name"] == "Worklist^Walter"
        )
    responses = findscu(
        worklist, tmp_path, f"StudyInstanceUID={walter['study_instance_uid']}", step=False
    )
    assert names(responses) == {"Worklist^Walter"}
    assert SPS not in responses[0]
    assert responses[0].AccessionNumber == walter["accession_number"]


def test_other_facility_sees_only_its_own(worklist: Archive, tmp_path: Path) -> None:
    assert names(findscu(worklist, tmp_path, calling_ae=EAST)) == {"East^Eve"}


def test_empty_step_sequence_returns_every_step_attribute(worklist: Archive) -> None:
    identifier = Dataset()
    identifier.PatientName = "Worklist^Walter"
    identifier.ScheduledProcedureStepSequence = []
    [(_, response)] = [r for r in _query(worklist, identifier) if r[1] is not None]
    step = response.ScheduledProcedureStepSequence[0]
    assert step.Modality == "MR" and step.ScheduledStationAETitle == WEST_MR
    assert step.ScheduledProcedureStepStartDate == "20261205"
    assert step.ScheduledProcedureStepID and step.ScheduledProcedureStepStatus == "SCHEDULED"


def _query(a: Archive, identifier: Dataset, calling_ae: str = WEST_CT) -> Iterator[tuple]:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", a.dicom_port, ae_title="NOCTISPRO")
    assert assoc.is_established
    try:
        results = [
            (status.Status, response)
            for status, response in assoc.send_c_find(identifier, ModalityWorklistInformationFind)
        ]
    finally:
        assoc.release()
    assert results and results[-1][0] == 0x0000, results
    return iter(results)


def _identifier(charset: str, name: str, physician: str = "") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = ""
    step = Dataset()
    step.ScheduledPerformingPhysicianName = physician
    step.Modality = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def _pending(a: Archive, identifier: Dataset) -> list[Dataset]:
    return [r for _, r in _query(a, identifier) if r is not None]


def test_latin1_names_in_and_out(worklist: Archive) -> None:
    [response] = _pending(worklist, _identifier("ISO_IR 100", "müller*"))
    assert response.SpecificCharacterSet == "ISO_IR 100"
    assert str(response.PatientName) == "Müller^Jürgen"
    assert str(response[SPS][0].ScheduledPerformingPhysicianName) == "Bartók^Béla"
    # A key inside the step item is decoded with the identifier's character set too.
    [by_physician] = _pending(worklist, _identifier("ISO_IR 100", "", physician="Bartók*"))
    assert str(by_physician.PatientName) == "Müller^Jürgen"


def test_utf8_names_in_and_out(worklist: Archive) -> None:
    [response] = _pending(worklist, _identifier("ISO_IR 192", "山田^太郎"))
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert str(response.PatientName) == "山田^太郎=やまだ^たろう"
    # Asked in Latin-1, a name Latin-1 cannot encode comes back in UTF-8.
    latin = _pending(worklist, _identifier("ISO_IR 100", ""))
    yamada = next(r for r in latin if str(r.PatientID) == "MWL-4")
    assert yamada.SpecificCharacterSet == "ISO_IR 192"
    assert str(yamada.PatientName) == "山田^太郎=やまだ^たろう"
    ascii_only = next(r for r in latin if str(r.PatientID) == "MWL-0")
    assert "SpecificCharacterSet" not in ascii_only


def test_a_peer_without_find_is_refused(worklist: Archive) -> None:
    worklist.run(
        "nodes", "add", "storeonly", "--aet", "STOREONLY", "--host", "127.0.0.1", "--port", "104"
    )
    ae = AE(ae_title="STOREONLY")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", worklist.dicom_port, ae_title="NOCTISPRO")
    assert assoc.is_established
    try:
        request = assoc.send_c_find(_identifier("", ""), ModalityWorklistInformationFind)
        statuses = [status.Status for status, _ in request]
    finally:
        assoc.release()
    assert statuses == [0x0124]
