"""C-FIND response identifiers written directly must be byte-identical to pydicom's."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dsutils import encode

from noctispro.dimse.find import encode_response_identifier, read_identifier, response_identifier
from noctispro.index.query import Level


def _request(implicit_vr: bool, charset: str | None = None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "RetrieveAETitle",
        "InstanceAvailability",
        "Rows",
        "ReferencedStudySequence",
    ):
        setattr(ds, keyword, [] if keyword.endswith("Sequence") else None)
    ds.add_new(0x00091010, "LO", None)  # a private key: returned empty
    ds.PatientName = "SMI*"
    # As pynetdicom hands it to the handler: raw elements read from the wire.
    raw = encode(ds, implicit_vr, True)
    assert raw is not None
    return read_dataset(BytesIO(raw), implicit_vr, True)


MATCHES = [
    {
        "PatientName": "SMITH^JOHN^A",
        "PatientID": "P0001",
        "PatientBirthDate": "19700101",
        "StudyInstanceUID": "1.2.3.4",
        "StudyDate": "20230301",
        "AccessionNumber": "A1",
        "StudyDescription": "CT Chest",
        "ModalitiesInStudy": ["CT", "SR"],
        "NumberOfStudyRelatedSeries": 3,
        "NumberOfStudyRelatedInstances": 120,
        "Rows": 512,
    },
    {
        "PatientName": "Müller^Jürgen",
        "PatientID": "P2",
        "PatientBirthDate": None,
        "StudyInstanceUID": "1.2.3.45",
        "StudyDate": None,
        "AccessionNumber": None,
        "StudyDescription": "IRM crâne",
        "ModalitiesInStudy": ["MR"],
        "NumberOfStudyRelatedSeries": 1,
        "NumberOfStudyRelatedInstances": 0,
    },
    {
        "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "PatientID": "P3",
        "StudyInstanceUID": "2.25.123456789",
        "ModalitiesInStudy": None,
    },
]


@pytest.mark.parametrize("implicit_vr", [True, False])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize("match", MATCHES)
def test_same_bytes_as_pydicom(implicit_vr: bool, charset: str | None, match: dict) -> None:
    terms, keys = read_identifier(_request(implicit_vr, charset))
    expected = encode(
        response_identifier(keys, match, Level.STUDY, "NOCTISPRO", terms), implicit_vr, True
    )
    got = encode_response_identifier(keys, match, Level.STUDY, "NOCTISPRO", terms, implicit_vr)
    assert got == expected


def test_values_it_does_not_handle_are_left_to_pydicom() -> None:
    terms, keys = read_identifier(_request(True))
    match = {"PatientName": "DOE^JOHN", "Rows": "512"}  # a US given as text
    assert encode_response_identifier(keys, match, Level.STUDY, "AE", terms, True) is None
