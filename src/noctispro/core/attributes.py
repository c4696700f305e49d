"""The attributes the index keeps, decoded from the values the structural walk collected.

No second parse: `inspect_file` hands over the raw bytes of these top-level elements,
and text is decoded with the file's Specific Character Set by pydicom's charset code.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS

from noctispro.core.dicomfile import FileLayout, InvalidDicom, Problem

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# tag: (field, VR) for the elements the index keeps (PS3.6 for the VRs).
INDEX_ELEMENTS: dict[int, tuple[str, str]] = {
    0x00080005: ("specific_character_set", "CS"),
    0x00080016: ("sop_class_uid", "UI"),
    0x00080018: ("sop_instance_uid", "UI"),
    0x00080020: ("study_date", "DA"),
    0x00080021: ("series_date", "DA"),
    0x00080030: ("study_time", "TM"),
    0x00080031: ("series_time", "TM"),
    0x00080050: ("accession_number", "SH"),
    0x00080060: ("modality", "CS"),
    0x00080090: ("referring_physician_name", "PN"),
    0x00081030: ("study_description", "LO"),
    0x0008103E: ("series_description", "LO"),
    0x00100010: ("patient_name", "PN"),
    0x00100020: ("patient_id", "LO"),
    0x00100021: ("issuer_of_patient_id", "LO"),
    0x00100030: ("patient_birth_date", "DA"),
    0x00100040: ("patient_sex", "CS"),
    0x00180015: ("body_part_examined", "CS"),
    0x0020000D: ("study_instance_uid", "UI"),
    0x0020000E: ("series_instance_uid", "UI"),
    0x00200010: ("study_id", "SH"),
    0x00200011: ("series_number", "IS"),
    0x00200013: ("instance_number", "IS"),
    0x00280008: ("number_of_frames", "IS"),
    0x00280010: ("rows", "US"),
    0x00280011: ("columns", "US"),
}
INDEX_TAGS = frozenset(INDEX_ELEMENTS)
LIMITS = {
    "specific_character_set": 128,
    "patient_name": 324,
    "referring_physician_name": 324,
    "study_description": 1024,
    "series_description": 1024,
    "patient_birth_date": 8,
    "study_date": 8,
    "series_date": 8,
    "study_time": 16,
    "series_time": 16,
    "patient_sex": 16,
    "modality": 16,
    "body_part_examined": 16,
    "study_id": 16,
}
TEXT_VRS = {"SH", "LO", "PN"}  # the VRs whose bytes depend on the character set


@dataclass(frozen=True)
class InstanceAttributes:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    specific_character_set: str = ""
    patient_name: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part_examined: str = ""
    series_date: str = ""
    series_time: str = ""
    instance_number: int | None = None
    number_of_frames: int | None = None
    rows: int | None = None
    columns: int | None = None


class MissingUID(ValueError):
    pass


class MalformedUID(ValueError):
    pass


def read_attributes(layout: FileLayout) -> InstanceAttributes:
    """The index attributes of a file that `inspect_file` accepted (with INDEX_TAGS)."""
    raw = layout.values
    try:
        terms = _ascii(raw.get(0x00080005, b"")).split("\\")
        encodings = convert_encodings([t.strip() for t in terms] if any(terms) else None)
    except (LookupError, ValueError):
        encodings = ["iso8859"]
    fields: dict[str, object] = {}
    try:
        for tag, (name, vr) in INDEX_ELEMENTS.items():
            if tag not in raw:
                continue
            value = raw[tag]
            if vr == "US":
                fields[name] = _unsigned_short(value, layout.is_little_endian)
            elif vr == "IS":
                minimum = 0 if name == "number_of_frames" else None
                fields[name] = _integer(_ascii(value), minimum=minimum)
            elif vr in TEXT_VRS:
                fields[name] = _clean(_decode_text(value, vr, encodings))[: LIMITS.get(name, 64)]
            elif vr in ("DA", "TM"):
                fields[name] = _date_time(vr, _clean(_ascii(value)))[: LIMITS.get(name, 64)]
            else:
                fields[name] = _clean(_ascii(value))[: LIMITS.get(name, 64)]
    except (ValueError, LookupError, TypeError) as exc:
        raise InvalidDicom(Problem.MALFORMED, f"header cannot be decoded: {exc}") from exc

    sop_class = str(fields.pop("sop_class_uid", "")) or layout.meta.get(0x00020002, "")
    if not sop_class:
        raise MissingUID("no SOP Class UID (0008,0016) in the data set or the file meta")
    fields["sop_class_uid"] = _check_uid("SOPClassUID", sop_class)
    for name, keyword in (
        ("sop_instance_uid", "SOPInstanceUID"),
        ("study_instance_uid", "StudyInstanceUID"),
        ("series_instance_uid", "SeriesInstanceUID"),
    ):
        uid = _uid_text(raw.get(_TAG_OF[name], b""))
        if not uid:
            raise MissingUID(f"no {keyword} in the data set")
        fields[name] = _check_uid(keyword, uid)
    fields["transfer_syntax_uid"] = _check_uid("TransferSyntaxUID", layout.transfer_syntax_uid)
    return InstanceAttributes(**fields)  # type: ignore[arg-type]


_TAG_OF = {name: tag for tag, (name, _) in INDEX_ELEMENTS.items()}


def _decode_text(value: bytes, vr: str, encodings: list[str]) -> str:
    """As pydicom does: values split on backslash, names on '=', escapes reset at '^'."""
    values = []
    for item in value.split(b"\\"):
        if vr == "PN":
            groups = [decode_bytes(g, encodings, PN_DELIMS) for g in item.split(b"=")]
            values.append("=".join(groups))
        else:
            values.append(decode_bytes(item, encodings, TEXT_VR_DELIMS))
    return "\\".join(values)


LEGACY_DATE = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
LEGACY_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}(?:\.\d{1,6})?))?$")


def _date_time(vr: str, text: str) -> str:
    """The ACR-NEMA forms `yyyy.mm.dd` and `hh:mm:ss` (PS3.5 6.2 notes) as DA and TM.

    Kept as received they would not fit the 8-character date column, and neither would
    compare with DICOM dates and times in range matching (PS3.4 C.2.2.2.5).
    """
    legacy = (LEGACY_DATE if vr == "DA" else LEGACY_TIME).match(text)
    if legacy is None:
        return text
    return "".join(part for part in legacy.groups() if part)


def _ascii(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _clean(value: str) -> str:
    return value.replace("\x00", "").strip()


def _uid_text(value: bytes) -> str:
    """UIDs are padded with NUL (PS3.5 9.1); keep everything else so a bad UID is seen."""
    return _ascii(value).rstrip("\x00 ").lstrip(" ")


def _check_uid(keyword: str, value: str) -> str:
    """PS3.5 9.1: digits and dots, at most 64 characters. Anything else could be a path."""
    if len(value) > 64:
        raise MalformedUID(f"{keyword} is longer than 64 characters")
    if not UID_PATTERN.fullmatch(value):
        raise MalformedUID(f"{keyword} {value[:70]!r} is not a UID (digits and dots only)")
    return value


def _unsigned_short(value: bytes, little: bool) -> int | None:
    if len(value) < 2:
        return None
    return int(struct.unpack_from("<H" if little else ">H", value)[0])


def _integer(text: str, minimum: int | None = None) -> int | None:
    text = text.replace("\x00", "").strip().split("\\")[0]
    try:
        number = int(text)
    except ValueError:
        return None
    if minimum is not None and number < minimum:
        return None
    if abs(number) > 2**31 - 1:
        return None
    return number
