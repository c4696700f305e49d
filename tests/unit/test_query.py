"""index.query / index.matching: the one query behind C-FIND and QIDO-RS (PS3.4 C.2.2.2).

Data enters through `store_instance`, as in production; each test states which studies
(series, instances) must match and compares with what `run_query` returns.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from noctispro.accounts.facilities import forget_cached_facilities
from noctispro.accounts.models import Facility
from noctispro.accounts.scoping import NOBODY, Principal
from noctispro.accounts.services import add_facility
from noctispro.core.ingest import Origin, store_instance
from noctispro.dimse.fastpath import EncodedIdentifier
from noctispro.dimse.find import STUDY_ROOT_FIND, handle_find
from noctispro.index.matching import glob_pattern, like_pattern, person_name_key
from noctispro.index.models import Patient, Study
from noctispro.index.query import InvalidQuery, Level, Query, index_keywords, run_query
from tests.factories import make_ct, to_bytes

pytestmark = pytest.mark.django_db(transaction=True)

EVERYONE = Principal(label="test", facility_ids=None)
CHARSET_FILES = Path(pydicom.data.__file__).parent / "charset_files"


@pytest.fixture(autouse=True)
def _clean(storage_root: Path) -> Iterator[None]:
    forget_cached_facilities()
    yield
    for p in storage_root.glob("??/??/*.dcm"):
        p.unlink()


def ct(ae: str = "MODALITY1", **fields: object) -> Dataset:
    """Store a small CT; DICOM keywords in `fields` override make_ct's values."""
    options = {k: fields.pop(k) for k in list(fields) if k[0].islower()}
    ds = make_ct(rows=4, columns=4, **options)  # type: ignore[arg-type]
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    store_instance(io.BytesIO(to_bytes(ds)), Origin(channel="test", calling_ae_title=ae))
    return ds


def store_file(path: Path, ae: str = "MODALITY1") -> Dataset:
    store_instance(path, Origin(channel="test", calling_ae_title=ae))
    return pydicom.dcmread(path, stop_before_pixels=True)


def studies(level_filters: dict[str, str], principal: Principal = EVERYONE, **kw) -> set[str]:
    query = Query(level=Level.STUDY, filters=level_filters, **kw)
    return {str(m["StudyInstanceUID"]) for m in run_query(principal, query).matches}


def uids(*datasets: Dataset) -> set[str]:
    return {str(ds.StudyInstanceUID) for ds in datasets}


# --- single value, universal, wildcards -----------------------------------------------


def test_single_value_matching_is_exact():
    a = ct(PatientID="P100")
    ct(PatientID="P1000")
    ct(PatientID="p100")
    assert studies({"PatientID": "P100"}) == uids(a)
    assert studies({"AccessionNumber": "ACC001", "PatientID": "P100"}) == uids(a)
    assert studies({"PatientID": "P10"}) == set()


def test_universal_matching_empty_and_star():
    a, b = ct(), ct(AccessionNumber="")
    everything = uids(a, b)
    assert studies({}) == everything
    assert studies({"AccessionNumber": ""}) == everything
    assert studies({"AccessionNumber": "*"}) == everything
    assert studies({"StudyInstanceUID": "*"}) == everything


def test_wildcards_star_and_question_mark():
    a = ct(patient_name="Doe^John")
    b = ct(patient_name="Doe^Jane")
    c = ct(patient_name="Dee^Jim")
    d = ct(patient_name="Smith^Doe")
    assert studies({"PatientName": "Doe*"}) == uids(a, b)
    assert studies({"PatientName": "D?e^J*"}) == uids(a, b, c)
    assert studies({"PatientName": "*Doe*"}) == uids(a, b, d)
    assert studies({"PatientName": "Doe^J?n?"}) == uids(b)
    # The wildcard spans the component delimiter.
    assert studies({"PatientName": "Doe*ne"}) == uids(b)
    assert studies({"StudyDescription": "Synthetic*"}) == uids(a, b, c, d)
    assert studies({"StudyDescription": "synthetic*"}) == set()  # LO is case-sensitive


def test_wildcards_only_for_the_vrs_that_allow_them():
    a = ct(study_date="20240102")
    assert studies({"StudyInstanceUID": str(a.StudyInstanceUID)[:5] + "*"}) == set()
    assert studies({"StudyDate": "2024*"}) == set()
    assert studies({"StudyDate": "2024010?"}) == set()
    assert studies({"ModalitiesInStudy": "C?"}) == uids(a)


def test_sql_pattern_characters_are_literal():
    percent = ct(accession="A%1")
    underscore = ct(accession="A_1")
    plain = ct(accession="AX1")
    bracket = ct(accession="A[1]")
    assert studies({"AccessionNumber": "A%*"}) == uids(percent)
    assert studies({"AccessionNumber": "A_*"}) == uids(underscore)
    assert studies({"AccessionNumber": "A[*"}) == uids(bracket)
    assert studies({"AccessionNumber": "A?1"}) == uids(percent, underscore, plain)
    assert studies({"AccessionNumber": "A%1"}) == uids(percent)
    assert like_pattern("a%b_c\\d*e?") == "a\\%b\\_c\\\\d%e_"
    assert glob_pattern("a[b*") == "a[[]b*"


# --- person names -----------------------------------------------------------------------


def test_person_names_case_insensitive_by_default_and_a_flag_for_exact_case():
    a = ct(patient_name="Doe^John")
    b = ct(patient_name="DOE^JOHANNA")
    assert studies({"PatientName": "doe^jo*"}) == uids(a, b)
    assert studies({"PatientName": "doe^john"}) == uids(a)
    assert studies({"PatientName": "doe^jo*"}, case_insensitive_names=False) == set()
    assert studies({"PatientName": "Doe^Jo*"}, case_insensitive_names=False) == uids(a)
    assert studies({"ReferringPhysicianName": "ref^doc*"}) == uids(a, b)


def test_person_name_trailing_empty_components_do_not_matter():
    a = ct(patient_name="Doe^John^^^")
    assert studies({"PatientName": "DOE^JOHN"}) == uids(a)
    assert studies({"PatientName": "Doe^John^"}) == uids(a)
    assert person_name_key("Doe^John^^=") == "DOE^JOHN"


def test_non_ascii_names_iso_ir_100_and_192():
    muller = ct(SpecificCharacterSet="ISO_IR 100", patient_name="Müller^Jürgen")
    yamada = ct(SpecificCharacterSet="ISO_IR 192", patient_name="山田^太郎")
    greek = ct(SpecificCharacterSet="ISO_IR 192", patient_name="Διονυσιος")
    assert studies({"PatientName": "müller*"}) == uids(muller)
    assert studies({"PatientName": "MÜLLER^JÜRGEN"}) == uids(muller)
    assert studies({"PatientName": "M?ller*"}) == uids(muller)
    assert studies({"PatientName": "Muller*"}) == set()
    assert studies({"PatientName": "山田*"}) == uids(yamada)
    assert studies({"PatientName": "山田^太郎"}) == uids(yamada)
    assert studies({"PatientName": "山?^太郎"}) == uids(yamada)
    assert studies({"PatientName": "διονυσιος"}) == uids(greek)
    match = next(iter(run_query(EVERYONE, Query(Level.STUDY, {"PatientName": "山田*"})).matches))
    assert match["SpecificCharacterSet"] == "ISO_IR 192"


def test_person_name_component_groups():
    """A one-group query matches the alphabetic group; non-ASCII ones any group."""
    japanese = store_file(CHARSET_FILES / "chrH31.dcm")  # Yamada^Tarou=山田^太郎=やまだ^たろう
    korean = store_file(CHARSET_FILES / "chrI2.dcm")  # Hong^Gildong=洪^吉洞=홍^길동
    assert studies({"PatientName": "Yamada^Tarou"}) == uids(japanese)
    assert studies({"PatientName": "yamada*"}) == uids(japanese)
    assert studies({"PatientName": "山田^太郎"}) == uids(japanese)
    assert studies({"PatientName": "やまだ*"}) == uids(japanese)
    assert studies({"PatientName": "=山田^太郎"}) == uids(japanese)
    assert studies({"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"}) == uids(japanese)
    assert studies({"PatientName": "Yamada^Tarou=洪^吉洞"}) == set()
    assert studies({"PatientName": "홍^길동"}) == uids(korean)
    assert studies({"PatientName": "Tarou"}) == set()  # an ASCII query: alphabetic group only
    latin = ct(patient_name="Smith=Jürgen")
    assert studies({"PatientName": "Jürgen"}) == set()  # Latin script: alphabetic group only
    assert studies({"PatientName": "=Jürgen"}) == uids(latin)


def test_fuzzy_person_name_matching_finds_a_part_anywhere():
    a = ct(patient_name="Doe^Johnathan")
    ct(patient_name="Smith^Ann")
    assert studies({"PatientName": "john"}, fuzzy=True) == uids(a)
    assert studies({"PatientName": "john"}) == set()


# --- ranges ----------------------------------------------------------------------------


def test_date_ranges():
    jan, jun, dec = (ct(study_date=d) for d in ("20200101", "20200615", "20201231"))
    undated = ct(study_date="")
    assert studies({"StudyDate": "20200101-20201231"}) == uids(jan, jun, dec)
    assert studies({"StudyDate": "20200102-20201230"}) == uids(jun)
    assert studies({"StudyDate": "20200615-"}) == uids(jun, dec)
    assert studies({"StudyDate": "-20200615"}) == uids(jan, jun)  # not the undated one
    assert studies({"StudyDate": "20200615"}) == uids(jun)
    assert studies({"StudyDate": "20200101\\20201231"}) == uids(jan, dec)
    assert studies({"StudyDate": "*"}) == uids(jan, jun, dec, undated)


def test_time_ranges_with_partial_ends():
    early = ct(StudyTime="080000")
    mid = ct(StudyTime="101530.25")
    late = ct(StudyTime="1800")
    assert studies({"StudyTime": "-1015"}) == uids(early, mid)
    assert studies({"StudyTime": "1016-"}) == uids(late)
    assert studies({"StudyTime": "0800-101530"}) == uids(early, mid)
    assert studies({"StudyTime": "080000"}) == uids(early)


def test_acr_nema_dates_and_times_are_stored_as_da_and_tm():
    legacy = ct(StudyDate="1997.04.24", StudyTime="14:04:38")
    assert studies({"StudyDate": "19970101-19971231", "StudyTime": "1400-1405"}) == uids(legacy)
    (match,) = run_query(
        EVERYONE, Query(Level.STUDY, {}, ("StudyDate", "StudyTime"), limit=1)
    ).matches
    assert (match["StudyDate"], match["StudyTime"]) == ("19970424", "140438")


def test_combined_date_time_range():
    """PS3.4 C.2.2.2.5.2: 5 Jan 10:00 to 7 Jan 18:00 as one range."""
    before = ct(study_date="20200105", StudyTime="0900")
    start = ct(study_date="20200105", StudyTime="1100")
    night = ct(study_date="20200106", StudyTime="0300")
    end = ct(study_date="20200107", StudyTime="1700")
    after = ct(study_date="20200107", StudyTime="1900")
    keys = {"StudyDate": "20200105-20200107", "StudyTime": "1000-1800"}
    assert studies(keys, combined_date_time=True) == uids(start, night, end)
    assert studies(keys) == uids(start, end)  # independent matching, without the option
    assert studies({"StudyDate": "20200106-", "StudyTime": "0200-"}, combined_date_time=True) == (
        uids(night, end, after)
    )
    assert before  # matched by neither


# --- UIDs and multi-valued attributes --------------------------------------------------------


def test_list_of_uid_matching():
    a, b, _c = ct(), ct(), ct()
    listed = f"{a.StudyInstanceUID}\\{b.StudyInstanceUID}\\1.2.3.4"
    assert studies({"StudyInstanceUID": listed}) == uids(a, b)
    assert studies({"StudyInstanceUID": str(a.StudyInstanceUID)}) == uids(a)


def test_multi_valued_index_columns_match_any_one_value():
    study = generate_uid()
    both = ct(study_uid=study, Modality="CT")
    ct(study_uid=study, Modality="MR")
    mr_ct = ct(study_uid=(s := generate_uid()), Modality="MR")
    ct(study_uid=s, Modality="CT")
    three = ct(study_uid=(t := generate_uid()), Modality="PT")
    ct(study_uid=t, Modality="CT")
    ct(study_uid=t, Modality="MR")
    ctx = ct(Modality="CTX")
    xct = ct(Modality="XCT")
    assert Study.objects.get(study_instance_uid=both.StudyInstanceUID).modalities_in_study == (
        "CT\\MR"
    )
    assert studies({"ModalitiesInStudy": "CT"}) == uids(both, mr_ct, three)
    assert studies({"ModalitiesInStudy": "MR"}) == uids(both, mr_ct, three)
    assert studies({"ModalitiesInStudy": "PT"}) == uids(three)
    assert studies({"ModalitiesInStudy": "CTX"}) == uids(ctx)
    assert studies({"ModalitiesInStudy": "PT\\CTX"}) == uids(three, ctx)
    assert studies({"ModalitiesInStudy": "*CT"}) == uids(both, mr_ct, three, xct)
    sop_class = str(both.SOPClassUID)
    assert studies({"SOPClassesInStudy": sop_class}) == uids(both, mr_ct, three, ctx, xct)
    assert studies({"SOPClassesInStudy": "1.2.3"}) == set()


def test_numbers_match_as_numbers():
    study = generate_uid()
    ct(study_uid=study, SeriesNumber=2, instance_number=7)
    ct(study_uid=study, series_uid=generate_uid(), SeriesNumber=10, instance_number=8)
    series = run_query(EVERYONE, Query(Level.SERIES, {"SeriesNumber": "2"}, ("SeriesNumber",)))
    assert [m["SeriesNumber"] for m in series.matches] == [2]
    images = run_query(EVERYONE, Query(Level.IMAGE, {"InstanceNumber": "08"}, ("InstanceNumber",)))
    assert [m["InstanceNumber"] for m in images.matches] == [8]
    assert list(run_query(EVERYONE, Query(Level.SERIES, {"SeriesNumber": "x"})).matches) == []


def test_keys_the_index_does_not_hold_are_ignored_and_returned_empty():
    a = ct()
    result = run_query(
        EVERYONE,
        Query(
            Level.STUDY,
            {"PatientAge": "045Y", "NumberOfStudyRelatedInstances": "9", "PatientName": "Doe*"},
            ("PatientAge", "OtherPatientIDsSequence", "PatientName"),
        ),
    )
    assert result.ignored == ("PatientAge", "NumberOfStudyRelatedInstances")
    (match,) = result.matches
    assert match["StudyInstanceUID"] == a.StudyInstanceUID
    assert match["PatientAge"] is None
    assert match["OtherPatientIDsSequence"] is None
    assert match["PatientName"] == "Doe^Jane"


def test_lower_level_keys_ask_for_a_matching_child():
    """Relational matching, as QIDO-RS may ask: studies with a CT series numbered 3."""
    study = generate_uid()
    ct(study_uid=study, Modality="MR", SeriesNumber=3)
    ct(study_uid=study, series_uid=generate_uid(), Modality="CT", SeriesNumber=4)
    other = ct(Modality="CT", SeriesNumber=3)
    assert studies({"Modality": "CT", "SeriesNumber": "3"}) == uids(other)
    assert studies({"Modality": "CT"}) == {study, other.StudyInstanceUID}
    assert studies({"SOPInstanceUID": str(other.SOPInstanceUID)}) == uids(other)
    patients = run_query(
        EVERYONE,
        Query(Level.PATIENT, {"Modality": "MR"}, ("PatientID",), information_model="patient"),
    )
    assert [m["PatientID"] for m in patients.matches] == ["PID001"]


# --- levels and returned values ----------------------------------------------------------


def _hierarchy() -> tuple[str, str, str, list[Dataset]]:
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    stored = [
        ct(study_uid=study, series_uid=s1, instance_number=2, SeriesNumber=1),
        ct(study_uid=study, series_uid=s1, instance_number=1, SeriesNumber=1),
        ct(study_uid=study, series_uid=s2, instance_number=1, SeriesNumber=2, Modality="MR"),
    ]
    return study, s1, s2, stored


def test_study_level_values_and_computed_keys(django_assert_num_queries):
    study, _s1, _s2, stored = _hierarchy()
    ct(patient_id="PID001", study_date="20190101")  # a second study of the patient
    keys = (
        "PatientName",
        "PatientBirthDate",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "SeriesInstanceUID",
        "PatientAge",
    )
    result = run_query(EVERYONE, Query(Level.STUDY, {"StudyInstanceUID": study}, keys))
    with django_assert_num_queries(1):
        (match,) = list(result.matches)
    assert match == {
        "PatientID": "PID001",
        "StudyInstanceUID": study,
        "PatientName": "Doe^Jane",
        "PatientBirthDate": "19700101",
        "StudyDate": "20240102",
        "StudyTime": "101500",
        "AccessionNumber": "ACC001",
        "ReferringPhysicianName": "Ref^Doctor",
        "ModalitiesInStudy": ["CT", "MR"],
        "SOPClassesInStudy": [str(stored[0].SOPClassUID)],
        "NumberOfStudyRelatedSeries": 2,
        "NumberOfStudyRelatedInstances": 3,
        "NumberOfPatientRelatedStudies": 2,
        "NumberOfPatientRelatedSeries": 3,
        "NumberOfPatientRelatedInstances": 4,
        "SeriesInstanceUID": None,  # below the level
        "PatientAge": None,  # not in the index
        "SpecificCharacterSet": "ISO_IR 100",
    }


def test_series_level(django_assert_num_queries):
    study, s1, s2, _ = _hierarchy()
    ct()  # another study
    keys = ("Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PatientName")
    result = run_query(EVERYONE, Query(Level.SERIES, {"StudyInstanceUID": study}, keys))
    with django_assert_num_queries(1):
        rows = list(result.matches)
    assert rows == [
        {
            "PatientID": "PID001",
            "StudyInstanceUID": study,
            "SeriesInstanceUID": s1,
            "Modality": "CT",
            "SeriesNumber": 1,
            "NumberOfSeriesRelatedInstances": 2,
            "PatientName": "Doe^Jane",
            "SpecificCharacterSet": "ISO_IR 100",
        },
        {
            "PatientID": "PID001",
            "StudyInstanceUID": study,
            "SeriesInstanceUID": s2,
            "Modality": "MR",
            "SeriesNumber": 2,
            "NumberOfSeriesRelatedInstances": 1,
            "PatientName": "Doe^Jane",
            "SpecificCharacterSet": "ISO_IR 100",
        },
    ]
    assert result.count() == 2


def test_image_level_in_instance_number_order():
    study, s1, _s2, stored = _hierarchy()
    keys = ("SOPClassUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames", "Modality")
    result = run_query(EVERYONE, Query(Level.IMAGE, {"SeriesInstanceUID": s1}, keys))
    rows = list(result.matches)
    assert [r["SOPInstanceUID"] for r in rows] == [
        stored[1].SOPInstanceUID,
        stored[0].SOPInstanceUID,
    ]
    assert rows[0] | {"SOPInstanceUID": None} == {
        "PatientID": "PID001",
        "StudyInstanceUID": study,
        "SeriesInstanceUID": s1,
        "SOPInstanceUID": None,
        "SOPClassUID": str(stored[0].SOPClassUID),
        "InstanceNumber": 1,
        "Rows": 4,
        "Columns": 4,
        "NumberOfFrames": None,
        "Modality": "CT",
        "SpecificCharacterSet": "ISO_IR 100",
    }


def test_patient_level(django_assert_num_queries):
    _hierarchy()
    ct(patient_id="PID001", study_date="20190101")
    other = ct(patient_id="PID002", patient_name="Roe^Richard")
    keys = (
        "PatientName",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "StudyDate",
    )
    query = Query(Level.PATIENT, {"PatientName": "*"}, keys, information_model="patient")
    result = run_query(EVERYONE, query)
    with django_assert_num_queries(1):
        rows = list(result.matches)
    assert rows == [
        {
            "PatientID": "PID001",
            "PatientName": "Doe^Jane",
            "PatientSex": "F",
            "NumberOfPatientRelatedStudies": 2,
            "NumberOfPatientRelatedSeries": 3,
            "NumberOfPatientRelatedInstances": 4,
            "StudyDate": None,
            "SpecificCharacterSet": "ISO_IR 100",
        },
        {
            "PatientID": "PID002",
            "PatientName": "Roe^Richard",
            "PatientSex": "F",
            "NumberOfPatientRelatedStudies": 1,
            "NumberOfPatientRelatedSeries": 1,
            "NumberOfPatientRelatedInstances": 1,
            "StudyDate": None,
            "SpecificCharacterSet": "ISO_IR 100",
        },
    ]
    assert Patient.objects.get(patient_id="PID002").patient_name_search == "ROE^RICHARD"
    named = Query(Level.PATIENT, {"PatientName": "roe*"}, (), information_model="patient")
    assert [m["PatientID"] for m in run_query(EVERYONE, named).matches] == [other.PatientID]
    with pytest.raises(InvalidQuery):
        run_query(EVERYONE, Query(Level.PATIENT))  # the study root has no patient level


def test_index_keywords_per_level():
    assert "PatientName" in index_keywords(Level.STUDY)
    assert "SeriesNumber" not in index_keywords(Level.STUDY)
    assert "SOPInstanceUID" in index_keywords(Level.IMAGE)


# --- scoping ---------------------------------------------------------------------------------


def _two_facilities() -> tuple[Facility, Facility]:
    return (
        add_facility("NORTH", "North hospital", ["NORTH_CT"]),
        add_facility("SOUTH", "South clinic", ["SOUTH_CT"]),
    )


def test_every_level_is_scoped_to_the_principals_facilities():
    north, south = _two_facilities()
    n1 = ct(ae="NORTH_CT", patient_id="SHARED", accession="N1")
    n2 = ct(ae="NORTH_CT", patient_id="SHARED", accession="N2")
    s1 = ct(ae="SOUTH_CT", patient_id="SHARED", accession="S1", patient_name="South^Name")
    north_reader = Principal(label="north", facility_ids=frozenset({north.pk}))
    south_reader = Principal(label="south", facility_ids=frozenset({south.pk}))
    assert studies({}, north_reader) == uids(n1, n2)
    assert studies({"AccessionNumber": "S1"}, north_reader) == set()
    assert studies({}, south_reader) == uids(s1)
    assert studies({}, NOBODY) == set()
    assert studies({}) == uids(n1, n2, s1)
    for level in (Level.SERIES, Level.IMAGE):
        rows = run_query(south_reader, Query(level)).matches
        assert {r["StudyInstanceUID"] for r in rows} == uids(s1)
    keys = ("PatientName", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances")
    patient_query = Query(Level.PATIENT, {"PatientID": "SHARED"}, keys, information_model="patient")
    (north_patient,) = run_query(north_reader, patient_query).matches
    assert north_patient["NumberOfPatientRelatedStudies"] == 2
    assert north_patient["PatientName"] == "Doe^Jane"
    (south_patient,) = run_query(south_reader, patient_query).matches
    assert south_patient["NumberOfPatientRelatedStudies"] == 1
    assert south_patient["PatientName"] == "South^Name"
    assert list(run_query(NOBODY, patient_query).matches) == []
    assert len(list(run_query(EVERYONE, patient_query).matches)) == 2
    study_query = Query(Level.STUDY, {"AccessionNumber": "S1"}, keys)
    (row,) = run_query(south_reader, study_query).matches
    assert row["NumberOfPatientRelatedStudies"] == 1  # not the north studies of PatientID SHARED


def test_a_patient_without_visible_studies_is_not_visible():
    north, _south = _two_facilities()
    ct(ae="SOUTH_CT", patient_id="ONLY_SOUTH")
    reader = Principal(label="north", facility_ids=frozenset({north.pk}))
    query = Query(Level.PATIENT, {"PatientID": "ONLY_SOUTH"}, (), information_model="patient")
    assert list(run_query(reader, query).matches) == []


# --- paging ------------------------------------------------------------------------------------


def test_limit_offset_and_count(django_assert_num_queries):
    made = [ct(study_date=f"2020010{n}") for n in range(1, 8)]
    newest_first = [str(ds.StudyInstanceUID) for ds in reversed(made)]
    result = run_query(EVERYONE, Query(Level.STUDY, {"StudyDate": "20200102-"}, limit=2, offset=1))
    with django_assert_num_queries(1):
        page = [m["StudyInstanceUID"] for m in result.matches]
    assert page == newest_first[1:3]
    with django_assert_num_queries(1):
        assert result.count() == 6
    everything = run_query(EVERYONE, Query(Level.STUDY, offset=5))
    assert [m["StudyInstanceUID"] for m in everything.matches] == newest_first[5:]
    with pytest.raises(InvalidQuery):
        run_query(EVERYONE, Query(Level.STUDY, limit=-1))


# --- the C-FIND handler on top ---------------------------------------------------------------


def _find_event(
    identifier: Dataset, sop_class: str = STUDY_ROOT_FIND, syntax: str = ImplicitVRLittleEndian
) -> SimpleNamespace:
    return SimpleNamespace(
        request=SimpleNamespace(AffectedSOPClassUID=sop_class),
        assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="MODALITY1")),
        context=SimpleNamespace(transfer_syntax=syntax),
        identifier=identifier,
        is_cancelled=False,
    )


def _decoded(ds: Dataset) -> Dataset:
    """A response identifier as the peer reads it (the little endian ones come encoded)."""
    if isinstance(ds, EncodedIdentifier):
        return read_dataset(io.BytesIO(ds.encoded), ds.implicit_vr, True)
    return ds


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_find_handler_answers_the_asked_keys_and_honours_cancel(syntax):
    for _ in range(3):
        ct()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "doe*"
    identifier.StudyInstanceUID = ""
    identifier.PatientAge = ""
    event = _find_event(identifier, syntax=syntax)
    responses = handle_find(event)  # type: ignore[arg-type]
    status, first = next(responses)
    assert status == 0xFF00
    assert isinstance(first, EncodedIdentifier) == (syntax != ExplicitVRBigEndian)
    first = _decoded(first)
    assert {e.keyword for e in first} == {
        "QueryRetrieveLevel",
        "RetrieveAETitle",
        "PatientName",
        "StudyInstanceUID",
        "PatientAge",
    }
    assert str(first.PatientName) == "Doe^Jane"
    assert first.PatientAge in ("", None)
    event.is_cancelled = True
    assert next(responses) == (0xFE00, None)
    assert list(responses) == []


def test_find_handler_refuses_other_sop_classes():
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    ((status, none),) = list(handle_find(_find_event(identifier, "1.2.3.4")))  # type: ignore[arg-type]
    assert status.Status == 0x0122
    assert none is None
