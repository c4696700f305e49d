"""C-FIND against a running `noctispro dicom`, from pynetdicom and DCMTK findscu.

The data set goes in through C-STORE: pydicom's test files, its character-set files and
generated studies with known values. Ground truth comes from the files themselves, read
with pydicom in the order they were sent (the archive keeps the first instance's
patient/study/series attributes), never from the archive's database. Every query
compares the set of matches and each returned value with that ground truth.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import MRImageStorage, generate_uid
from pydicom.valuerep import PersonName
from pynetdicom import AE, _config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.factories import make_ct, write
from tests.helpers import pydicom_test_files
from tests.integration.archive import Archive, archive_at
from tests.integration.conftest import need

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
LOADER = "LOADER"  # an unknown AE: its studies go to the default facility
PATIENT_ROOT = "patient"
STUDY_ROOT = "study"
MODELS = {
    PATIENT_ROOT: PatientRootQueryRetrieveInformationModelFind,
    STUDY_ROOT: StudyRootQueryRetrieveInformationModelFind,
}
CHARSET_FILES = sorted((Path(pydicom.data.__file__).parent / "charset_files").glob("*.dcm"))

# Return keys asked at each level (PatientAge is not in the index: it must come back empty).
RETURN_KEYS = {
    "PATIENT": [
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ],
    "STUDY": [
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "PatientAge",
    ],
    "SERIES": [
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ],
    "IMAGE": [
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    ],
}
UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
NOT_INDEXED = {"PatientAge"}


# --- the data set ------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    name: str
    patient_id: str
    date: str
    time: str
    accession: str
    description: str
    charset: str = "ISO_IR 100"
    referring: str = "Welby^Marcus"
    # (modality, series number, series description, instances)
    series: tuple[tuple[str, int, str, int], ...] = (("CT", 1, "Axial", 1),)


GENERATED = [
    Generated(
        "Doe^John",
        "G-DOE-1",
        "20200315",
        "093000",
        "Q%1",
        "CT Chest",
        series=(("CT", 1, "Axial", 3), ("CT", 2, "Coronal", 1)),
    ),
    Generated(
        "Doe^Jane",
        "G-DOE-2",
        "20201231",
        "180000",
        "Q_1",
        "MR Knee left",
        referring="House^Gregory",
        series=(("MR", 1, "Sag T1", 2), ("CT", 2, "Scout", 1)),
    ),
    Generated("DOE^JOHANNES", "G-DOE-3", "20210101", "000000", "QX1", "CT Abdomen"),
    Generated(
        "Dee^Jim^^^",
        "G-DEE",
        "20190601",
        "120000",
        "Q[1]",
        "US Liver",
        series=(("US", 1, "Liver", 2),),
    ),
    Generated(
        "Müller^Jürgen",
        "G-MUE",
        "20200101",
        "101500",
        "M1",
        "Röntgen Thorax",
        series=(("CR", 1, "PA", 1),),
    ),
    Generated("山田^太郎", "G-YAM", "20220202", "081500", "Y1", "頭部CT", charset="ISO_IR 192"),
    Generated("Ünal^Ayşe", "G-UNAL", "20220203", "140000", "U1", "Göğüs", charset="ISO_IR 192"),
    Generated("Smith^Doe", "G-SMI", "", "", "S1", "No date", series=(("MR", 3, "Ax", 1),)),
    Generated("Doe^John", "G-DOE-1", "20230505", "235959", "Q%2", "CT Chest follow-up"),
]


def generated_files(folder: Path) -> list[Path]:
    paths = []
    for g in GENERATED:
        study = generate_uid()
        for modality, number, description, count in g.series:
            series = generate_uid()
            for n in range(count):
                ds = make_ct(
                    study_uid=study,
                    series_uid=series,
                    patient_id=g.patient_id,
                    patient_name=g.name,
                    study_date=g.date,
                    accession=g.accession,
                    instance_number=n + 1,
                    rows=4,
                    columns=4,
                    description=g.description,
                )
                ds.SpecificCharacterSet = g.charset
                ds.StudyTime = g.time
                ds.ReferringPhysicianName = g.referring
                ds.Modality = modality
                ds.SeriesNumber = number
                ds.SeriesDescription = description
                if modality == "MR":
                    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
                paths.append(write(ds, folder / f"{ds.SOPInstanceUID}.dcm"))
    return paths


def send(port: int, paths: list[Path], ae_title: str) -> list[Path]:
    """C-STORE each file as it is on disk; return the ones the archive accepted."""
    accepted = []
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        for path in paths:
            try:
                meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
                contexts = (meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
            except Exception:  # pydicom's odd files: not sent, not in the truth
                continue
            ae = AE(ae_title=ae_title)
            ae.add_requested_context(*contexts)
            assoc = ae.associate("127.0.0.1", port, ae_title="NOCTISPRO")
            if not assoc.is_established:
                continue
            try:
                status = assoc.send_c_store(path)
            except Exception:  # refused or dropped: not in the truth
                status = None
            finally:
                assoc.release()
            if status is not None and status.get("Status") == 0x0000:
                accepted.append(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return accepted


# --- ground truth from the files -------------------------------------------------------------


def norm(value: Any) -> Any:
    """Values as compared: None for empty, int for numbers, tuples for multiple values."""
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = tuple(str(v).strip() for v in value if str(v).strip())
        return items or None
    if isinstance(value, int):
        return int(value)
    text = str(value).replace("\x00", "").strip()
    return text or None


def attr(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword)
    if isinstance(value, PersonName):
        value = str(value)
    value = norm(value)
    # ACR-NEMA dates and times (PS3.5 6.2 notes: 1997.04.24, 14:04:38) are DA/TM values.
    legacy = r"\d{4}\.\d\d\.\d\d|\d\d:\d\d(:\d\d(\.\d+)?)?"
    if (
        isinstance(value, str)
        and keyword.endswith(("Date", "Time"))
        and re.fullmatch(legacy, value)
    ):
        value = value.replace(".", "") if keyword.endswith("Date") else value.replace(":", "")
    return value


@dataclass
class Truth:
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, ds: Dataset) -> None:
        sop = attr(ds, "SOPInstanceUID")
        if sop in self.instances:
            return  # the archive keeps the first one
        study_uid, series_uid = attr(ds, "StudyInstanceUID"), attr(ds, "SeriesInstanceUID")
        patient = (attr(ds, "PatientID") or "", attr(ds, "IssuerOfPatientID") or "")
        key = "\\".join(patient)
        if key not in self.patients:
            self.patients[key] = {
                k: attr(ds, k)
                for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
            } | {"studies": set()}
        study = self.studies.get(study_uid)
        if study is None:
            study = self.studies[study_uid] = {
                k: attr(ds, k) for k in RETURN_KEYS["STUDY"] if k not in NOT_INDEXED
            } | {
                "modalities": [],
                "sop_classes": [],
                "series": set(),
                "instances": 0,
                "patient": key,
            }
            self.patients[key]["studies"].add(study_uid)
        series = self.series.get(series_uid)
        if series is None:
            series = self.series[series_uid] = {
                k: attr(ds, k) for k in RETURN_KEYS["SERIES"] if not k.startswith("Number")
            } | {"instances": 0, "study": study_uid}
            study["series"].add(series_uid)
        modality = attr(ds, "Modality")
        if modality and modality not in study["modalities"]:
            study["modalities"].append(modality)
        if attr(ds, "SOPClassUID") not in study["sop_classes"]:
            study["sop_classes"].append(attr(ds, "SOPClassUID"))
        study["instances"] += 1
        series["instances"] += 1
        self.instances[sop] = (
            {k: attr(ds, k) for k in RETURN_KEYS["IMAGE"]}
            | {k: study[k] for k in ("PatientName", "PatientID", "StudyDate")}
            | {"Modality": series["Modality"]}
        )

    def rows(self, level: str) -> list[dict[str, Any]]:
        """Every entity of a level with the values the archive must return for it."""
        if level == "IMAGE":
            return list(self.instances.values())
        if level == "SERIES":
            return [
                s
                | {"NumberOfSeriesRelatedInstances": s["instances"]}
                | {k: self.studies[s["study"]][k] for k in ("PatientID", "PatientName")}
                for s in self.series.values()
            ]
        if level == "STUDY":
            return [self._study(s) for s in self.studies.values()]
        rows = []
        for p in self.patients.values():
            if not p["studies"]:
                continue  # a patient reached only through another patient's study
            studies = [self.studies[uid] for uid in p["studies"]]
            rows.append(
                p
                | {
                    "NumberOfPatientRelatedStudies": len(studies),
                    "NumberOfPatientRelatedSeries": sum(len(s["series"]) for s in studies),
                    "NumberOfPatientRelatedInstances": sum(s["instances"] for s in studies),
                }
            )
        return rows

    def _study(self, s: dict[str, Any]) -> dict[str, Any]:
        return s | {
            "ModalitiesInStudy": tuple(s["modalities"]) or None,
            "NumberOfStudyRelatedSeries": len(s["series"]),
            "NumberOfStudyRelatedInstances": s["instances"],
            "PatientAge": None,
        }


def truth_of(paths: list[Path]) -> Truth:
    truth = Truth()
    for path in paths:
        truth.add(pydicom.dcmread(path, stop_before_pixels=True))
    return truth


# --- matching as the standard defines it, for the predicates ----------------------------------


def wild(pattern: str, value: str | None, *, fold: bool = False) -> bool:
    """PS3.4 C.2.2.2.4 wild card matching of one value."""
    if value is None:
        return False
    if fold:
        pattern, value = pattern.upper(), value.upper()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def name(pattern: str, value: str | None) -> bool:
    """PN: case-insensitive; the alphabetic group; CJK queries any group; trailing ^ free."""
    if value is None:
        return False
    groups = [g.rstrip("^") for g in value.split("=")]
    pattern = pattern.rstrip("^")
    candidates = {"=".join(groups), groups[0]}
    if any(ord(c) >= 0x1100 for c in pattern):
        candidates |= set(groups)
    return any(wild(pattern, c, fold=True) for c in candidates)


def date_in(value: str | None, low: str = "", high: str = "") -> bool:
    return bool(value) and (not low or value >= low) and (not high or value <= high)


# --- the client side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    level: str
    keys: dict[str, str]
    predicate: Callable[[dict[str, Any]], bool]
    charset: str | None = None

    def identifier(self) -> Dataset:
        ds = Dataset()
        if self.charset:
            ds.SpecificCharacterSet = self.charset
        ds.QueryRetrieveLevel = self.level
        for keyword in RETURN_KEYS[self.level]:
            setattr(ds, keyword, "")
        for keyword, value in self.keys.items():
            setattr(ds, keyword, value)
        return ds


def c_find(port: int, identifier: Dataset, model: str, ae_title: str = LOADER):
    """(final status, [response identifiers]) of one C-FIND from pynetdicom."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(MODELS[model])
    assoc = ae.associate("127.0.0.1", port, ae_title="NOCTISPRO")
    assert assoc.is_established
    found, final = [], None
    try:
        for status, response in assoc.send_c_find(identifier, MODELS[model]):
            assert status, "no response"
            if status.Status in (0xFF00, 0xFF01):
                found.append(response)
            else:
                final = status
    finally:
        assoc.release()
    assert final is not None
    return final, found


def check(case: Case, truth: Truth, responses: list[Dataset]) -> None:
    """Matches and values equal the ground truth; responses hold exactly the asked keys."""
    key = UNIQUE[case.level]
    expected = {row[key]: row for row in truth.rows(case.level) if case.predicate(row)}
    got = {norm(r.get(key)): r for r in responses}
    assert len(got) == len(responses), f"{case.label}: duplicate responses"
    assert set(got) == set(expected), f"{case.label}: {set(got) ^ set(expected)}"
    asked = set(RETURN_KEYS[case.level]) | set(case.keys) | {"QueryRetrieveLevel"}
    for uid, response in got.items():
        keywords = {e.keyword for e in response} - {"SpecificCharacterSet", "RetrieveAETitle"}
        assert keywords == asked, f"{case.label}: {keywords ^ asked}"
        assert response.QueryRetrieveLevel == case.level
        assert response.RetrieveAETitle == "NOCTISPRO"
        for keyword in RETURN_KEYS[case.level]:
            want = expected[uid].get(keyword)
            have = attr(response, keyword)
            if keyword == "ModalitiesInStudy":  # one value comes back as a str
                want = sorted(want or ())
                have = sorted((have,) if isinstance(have, str) else have or ())
            assert have == want, f"{case.label}: {keyword} of {uid}: {have!r} != {want!r}"


def findscu(port: int, case: Case, out: Path, ae_title: str = LOADER) -> list[Dataset]:
    """The same query through DCMTK findscu, responses extracted to files (-X)."""
    out.mkdir(parents=True, exist_ok=True)
    codec = pydicom.charset.python_encoding[case.charset] if case.charset else "ascii"
    args: list[str | bytes] = [
        need("findscu"),
        "-P" if case.model == PATIENT_ROOT else "-S",
        "-aet",
        ae_title,
        "-aec",
        "NOCTISPRO",
        "-X",
        "-od",
        str(out),
        "-k",
        f"QueryRetrieveLevel={case.level}",
    ]
    if case.charset:
        args += ["-k", f"SpecificCharacterSet={case.charset}"]
    for keyword in RETURN_KEYS[case.level]:
        if keyword not in case.keys:
            args += ["-k", keyword]
    for keyword, value in case.keys.items():
        args += ["-k", f"{keyword}={value}".encode(codec)]
    args += ["127.0.0.1", str(port)]
    result = subprocess.run(args, env=DCMTK_ENV, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [pydicom.dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


# --- fixtures ------------------------------------------------------------------------------------


@dataclass
class Loaded:
    archive: Archive
    truth: Truth  # what LOADER (the default facility) sees
    generated: list[Path]
    north: list[str]
    south: list[str]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    root = tmp_path_factory.mktemp("cfind")
    with archive_at(root / "archive") as archive:
        archive.run("facilities", "add", "NORTH", "--name", "North", "--ae", "NORTH_CT")
        archive.run("facilities", "add", "SOUTH", "--name", "South", "--ae", "SOUTH_CT")
        archive.start("dicom")
        port = archive.dicom_port
        generated = generated_files(root / "generated")
        sent = send(port, [*generated, *pydicom_test_files(), *CHARSET_FILES], LOADER)
        assert len(sent) > 120
        assert all(p in sent for p in generated)
        scoped = {}
        for facility in ("NORTH", "SOUTH"):
            studies = []
            for n in range(2 if facility == "NORTH" else 1):
                ds = make_ct(patient_id="SHARED", accession=f"{facility}{n}", rows=4, columns=4)
                studies.append(str(ds.StudyInstanceUID))
                path = write(ds, root / facility / f"{n}.dcm")
                assert send(port, [path], f"{facility}_CT") == [path]
            scoped[facility] = studies
        yield Loaded(archive, truth_of(sent), generated, scoped["NORTH"], scoped["SOUTH"])


def _uid_of(truth: Truth, patient_id: str, date: str = "") -> str:
    return next(
        uid
        for uid, s in truth.studies.items()
        if s["PatientID"] == patient_id and (not date or s["StudyDate"] == date)
    )


def cases(truth: Truth) -> list[Case]:
    doe1 = _uid_of(truth, "G-DOE-1", "20200315")
    doe2 = _uid_of(truth, "G-DOE-2")
    doe1_series = sorted(s for s, v in truth.series.items() if v["study"] == doe1)
    some_images = sorted(truth.instances)[:3]
    some_studies = sorted(truth.studies)[:2]
    return [
        # Study root, STUDY level.
        Case("universal", STUDY_ROOT, "STUDY", {}, lambda s: True),
        Case(
            "name prefix",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "Doe*"},
            lambda s: name("Doe*", s["PatientName"]),
        ),
        Case(
            "name lower case",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "doe^jo*"},
            lambda s: name("doe^jo*", s["PatientName"]),
        ),
        Case(
            "name ?",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "D?e^J*"},
            lambda s: name("D?e^J*", s["PatientName"]),
        ),
        Case(
            "name exact, trailing ^",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "DEE^JIM"},
            lambda s: s["PatientID"] == "G-DEE",
        ),
        Case(
            "name inside",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "*doe*"},
            lambda s: name("*doe*", s["PatientName"]),
        ),
        Case(
            "pydicom names",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "CompressedSamples*"},
            lambda s: name("CompressedSamples*", s["PatientName"]),
        ),
        Case(
            "patient id",
            STUDY_ROOT,
            "STUDY",
            {"PatientID": "G-DOE-1"},
            lambda s: s["PatientID"] == "G-DOE-1",
        ),
        Case(
            "patient id wildcard",
            STUDY_ROOT,
            "STUDY",
            {"PatientID": "G-D??-*"},
            lambda s: wild("G-D??-*", s["PatientID"]),
        ),
        Case(
            "date range",
            STUDY_ROOT,
            "STUDY",
            {"StudyDate": "20200101-20201231"},
            lambda s: date_in(s["StudyDate"], "20200101", "20201231"),
        ),
        Case(
            "date until",
            STUDY_ROOT,
            "STUDY",
            {"StudyDate": "-20050101"},
            lambda s: date_in(s["StudyDate"], high="20050101"),
        ),
        Case(
            "date from",
            STUDY_ROOT,
            "STUDY",
            {"StudyDate": "20210101-"},
            lambda s: date_in(s["StudyDate"], low="20210101"),
        ),
        Case(
            "single date",
            STUDY_ROOT,
            "STUDY",
            {"StudyDate": "20201231"},
            lambda s: s["StudyDate"] == "20201231",
        ),
        Case(
            "time range",
            STUDY_ROOT,
            "STUDY",
            {"StudyTime": "0900-1200"},
            lambda s: date_in(s["StudyTime"], "0900", "1200" + "59.999999"),
        ),
        Case(
            "accession with _",
            STUDY_ROOT,
            "STUDY",
            {"AccessionNumber": "Q_*"},
            lambda s: s["AccessionNumber"] == "Q_1",
        ),
        Case(
            "accession with %",
            STUDY_ROOT,
            "STUDY",
            {"AccessionNumber": "Q%*"},
            lambda s: (s["AccessionNumber"] or "").startswith("Q%"),
        ),
        Case(
            "accession ?",
            STUDY_ROOT,
            "STUDY",
            {"AccessionNumber": "Q?1"},
            lambda s: wild("Q?1", s["AccessionNumber"]),
        ),
        Case(
            "accession with [",
            STUDY_ROOT,
            "STUDY",
            {"AccessionNumber": "Q[*"},
            lambda s: s["AccessionNumber"] == "Q[1]",
        ),
        Case(
            "modality in study",
            STUDY_ROOT,
            "STUDY",
            {"ModalitiesInStudy": "MR"},
            lambda s: "MR" in s["modalities"],
        ),
        Case(
            "modalities list",
            STUDY_ROOT,
            "STUDY",
            {"ModalitiesInStudy": "US\\CR"},
            lambda s: bool({"US", "CR"} & set(s["modalities"])),
        ),
        Case(
            "study uid list",
            STUDY_ROOT,
            "STUDY",
            {"StudyInstanceUID": "\\".join([*some_studies, "1.2.3.4.5"])},
            lambda s: s["StudyInstanceUID"] in some_studies,
        ),
        Case(
            "description wildcard",
            STUDY_ROOT,
            "STUDY",
            {"StudyDescription": "*Chest*"},
            lambda s: wild("*Chest*", s["StudyDescription"]),
        ),
        Case(
            "referring physician",
            STUDY_ROOT,
            "STUDY",
            {"ReferringPhysicianName": "house*"},
            lambda s: name("house*", s["ReferringPhysicianName"]),
        ),
        Case(
            "name and date",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "doe*", "StudyDate": "20200101-20201231"},
            lambda s: (
                name("doe*", s["PatientName"]) and date_in(s["StudyDate"], "20200101", "20201231")
            ),
        ),
        Case(
            "ISO_IR 100 name",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "müller*"},
            lambda s: name("müller*", s["PatientName"]),
            charset="ISO_IR 100",
        ),
        Case(
            "ISO_IR 100 accented",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "B?c^J*r?me"},
            lambda s: name("B?c^J*r?me", s["PatientName"]),
            charset="ISO_IR 100",
        ),
        Case(
            "ISO_IR 192 kanji",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "山田*"},
            lambda s: name("山田*", s["PatientName"]),
            charset="ISO_IR 192",
        ),
        Case(
            "ISO_IR 192 ideographic group",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "=山田^太郎"},
            lambda s: "=山田^太郎" in (s["PatientName"] or ""),
            charset="ISO_IR 192",
        ),
        Case(
            "ISO_IR 192 hangul",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "홍^길동"},
            lambda s: name("홍^길동", s["PatientName"]),
            charset="ISO_IR 192",
        ),
        Case(
            "alphabetic group of a Japanese name",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "yamada^tarou"},
            lambda s: name("yamada^tarou", s["PatientName"]),
        ),
        Case(
            "outside latin-1",
            STUDY_ROOT,
            "STUDY",
            {"PatientName": "ÜNAL*"},
            lambda s: s["PatientID"] == "G-UNAL",
            charset="ISO_IR 192",
        ),
        # Study root, SERIES and IMAGE levels.
        Case(
            "series of a study",
            STUDY_ROOT,
            "SERIES",
            {"StudyInstanceUID": doe1},
            lambda s: s["study"] == doe1,
        ),
        Case(
            "MR series anywhere",
            STUDY_ROOT,
            "SERIES",
            {"Modality": "MR"},
            lambda s: s["Modality"] == "MR",
        ),
        Case(
            "series number",
            STUDY_ROOT,
            "SERIES",
            {"StudyInstanceUID": doe2, "SeriesNumber": "2"},
            lambda s: s["study"] == doe2 and s["SeriesNumber"] == 2,
        ),
        Case(
            "series description",
            STUDY_ROOT,
            "SERIES",
            {"SeriesDescription": "Co*"},
            lambda s: wild("Co*", s["SeriesDescription"]),
        ),
        Case(
            "images of a series",
            STUDY_ROOT,
            "IMAGE",
            {"StudyInstanceUID": doe1, "SeriesInstanceUID": doe1_series[0]},
            lambda i: i["SeriesInstanceUID"] == doe1_series[0],
        ),
        Case(
            "instance number",
            STUDY_ROOT,
            "IMAGE",
            {"StudyInstanceUID": doe1, "InstanceNumber": "2"},
            lambda i: i["StudyInstanceUID"] == doe1 and i["InstanceNumber"] == 2,
        ),
        Case(
            "image uid list",
            STUDY_ROOT,
            "IMAGE",
            {"SOPInstanceUID": "\\".join(some_images)},
            lambda i: i["SOPInstanceUID"] in some_images,
        ),
        Case(
            "MR images",
            STUDY_ROOT,
            "IMAGE",
            {"SOPClassUID": MRImageStorage},
            lambda i: i["SOPClassUID"] == MRImageStorage,
        ),
        # Patient root.
        Case("all patients", PATIENT_ROOT, "PATIENT", {}, lambda p: True),
        Case(
            "patient by id",
            PATIENT_ROOT,
            "PATIENT",
            {"PatientID": "G-DOE-1"},
            lambda p: p["PatientID"] == "G-DOE-1",
        ),
        Case(
            "patients by name",
            PATIENT_ROOT,
            "PATIENT",
            {"PatientName": "doe*"},
            lambda p: name("doe*", p["PatientName"]),
        ),
        Case(
            "patient root studies",
            PATIENT_ROOT,
            "STUDY",
            {"PatientID": "G-DOE-1", "StudyDate": "20230101-"},
            lambda s: s["PatientID"] == "G-DOE-1" and date_in(s["StudyDate"], "20230101"),
        ),
        Case(
            "patient root series",
            PATIENT_ROOT,
            "SERIES",
            {"PatientID": "G-DOE-1", "StudyInstanceUID": doe1},
            lambda s: s["study"] == doe1,
        ),
        Case(
            "patient root images",
            PATIENT_ROOT,
            "IMAGE",
            {"PatientID": "G-DOE-1", "StudyInstanceUID": doe1, "SeriesInstanceUID": doe1_series[1]},
            lambda i: i["SeriesInstanceUID"] == doe1_series[1],
        ),
    ]


# --- tests ---------------------------------------------------------------------------------


def test_query_suite_with_pynetdicom(loaded: Loaded) -> None:
    suite = cases(loaded.truth)
    assert len(suite) >= 30
    nonempty = 0
    for case in suite:
        final, responses = c_find(loaded.archive.dicom_port, case.identifier(), case.model)
        assert final.Status == 0x0000, case.label
        check(case, loaded.truth, responses)
        nonempty += bool(responses)
    assert nonempty >= len(suite) - 2  # the queries select something (they can fail)


FINDSCU_CASES = [
    "universal",
    "name lower case",
    "date range",
    "accession with _",
    "modality in study",
    "study uid list",
    "ISO_IR 100 name",
    "ISO_IR 192 kanji",
    "series of a study",
    "instance number",
    "all patients",
    "patient root images",
]


def test_query_suite_with_findscu(loaded: Loaded, tmp_path: Path) -> None:
    by_label = {c.label: c for c in cases(loaded.truth)}
    for n, label in enumerate(FINDSCU_CASES):
        case = by_label[label]
        responses = findscu(loaded.archive.dicom_port, case, tmp_path / str(n))
        check(case, loaded.truth, responses)


def test_response_character_sets(loaded: Loaded) -> None:
    port = loaded.archive.dicom_port

    def charset_of(patient_name: str, request_charset: str | None) -> set[str | None]:
        case = Case("", STUDY_ROOT, "STUDY", {"PatientName": patient_name}, bool, request_charset)
        _, responses = c_find(port, case.identifier(), STUDY_ROOT)
        assert responses
        return {r.get("SpecificCharacterSet") for r in responses}

    assert charset_of("Doe^Jane", None) == {None}  # all ASCII: none (PS3.4 C.4.1.1.3.2)
    assert charset_of("Müller*", "ISO_IR 100") == {"ISO_IR 100"}  # the requester's
    assert charset_of("Müller*", "ISO_IR 192") == {"ISO_IR 192"}
    assert charset_of("Ünal*", "ISO_IR 100") == {"ISO_IR 192"}  # ş is not in latin-1
    assert charset_of("山田^太郎", "ISO_IR 192") == {"ISO_IR 192"}


def test_facility_scoping_over_dimse(loaded: Loaded) -> None:
    port = loaded.archive.dicom_port
    study_query = Case("", STUDY_ROOT, "STUDY", {}, bool).identifier()
    for ae_title, own in (("NORTH_CT", loaded.north), ("SOUTH_CT", loaded.south)):
        _, responses = c_find(port, study_query, STUDY_ROOT, ae_title)
        assert {r.StudyInstanceUID for r in responses} == set(own)
    _, responses = c_find(port, study_query, STUDY_ROOT, LOADER)
    assert not {r.StudyInstanceUID for r in responses} & {*loaded.north, *loaded.south}
    patient = Case("", PATIENT_ROOT, "PATIENT", {"PatientID": "SHARED"}, bool).identifier()
    (north,) = c_find(port, patient, PATIENT_ROOT, "NORTH_CT")[1]
    assert north.NumberOfPatientRelatedStudies == 2
    (south,) = c_find(port, patient, PATIENT_ROOT, "SOUTH_CT")[1]
    assert south.NumberOfPatientRelatedStudies == 1
    assert c_find(port, patient, PATIENT_ROOT, LOADER)[1] == []


@pytest.mark.parametrize(
    ("model", "keys", "status"),
    [
        (STUDY_ROOT, {"PatientName": "Doe*"}, 0xA900),  # no QueryRetrieveLevel
        (STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT"}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "FRAME"}, 0xA900),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientName": "Doe*"}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyDate": "2020*"}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "Modality": "CT"}, 0xA900),
    ],
)
def test_bad_identifiers_are_refused(
    loaded: Loaded, model: str, keys: dict[str, str], status: int
) -> None:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    final, responses = c_find(loaded.archive.dicom_port, ds, model)
    assert responses == []
    assert final.Status == status
    assert final.ErrorComment


def test_empty_keys_above_the_level_are_answered(loaded: Loaded) -> None:
    """Patient root STUDY query with an empty PatientName: a return key, not refused."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "G-DOE-1"
    ds.PatientName = ""
    ds.StudyInstanceUID = ""
    ds.add_new(0x00091010, "LO", "")  # a private key: returned empty
    ds.add_new(0x00081110, "SQ", [])  # a sequence: not matched, returned empty
    final, responses = c_find(loaded.archive.dicom_port, ds, PATIENT_ROOT)
    assert final.Status == 0x0000
    assert len(responses) == 2
    for r in responses:
        assert str(r.PatientName) == "Doe^John"
        assert r[0x00091010].value in (None, "", b"")
        assert len(r.ReferencedStudySequence) == 0
