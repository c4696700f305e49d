"""Index values as DICOM JSON (PS3.18 F.2), for QIDO-RS results and STOW-RS responses."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from noctispro.index.query import attribute

# VRs whose values are never split on backslash (PS3.5 6.2: VM 1, backslash allowed).
SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT", "UR"})
NUMBER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS"})


def tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def vr_of(keyword: str) -> str:
    attr = attribute(keyword)
    if attr is not None:
        return attr.vr
    vr = str(dictionary_VR(keyword))
    return vr.split(" or ")[0]


def person_name(value: str) -> dict[str, str]:
    """`Yamada^Tarou=山田^太郎=やまだ^たろう` → the PersonName object of PS3.18 F.2.2."""
    groups = value.split("=")
    out = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            out[name] = group
    return out


def element(vr: str, value: Any) -> dict[str, Any]:
    """One attribute: `{"vr": ..., "Value": [...]}`, or just the VR when it is empty."""
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if isinstance(value, list | tuple):
        values = list(value)
    elif isinstance(value, str) and vr not in SINGLE_VALUED_VRS:
        values = value.split("\\")
    else:
        values = [value]
    if vr == "PN":
        return {"vr": vr, "Value": [person_name(str(v)) for v in values]}
    if vr in NUMBER_VRS:
        numbers: list[Any] = []
        for v in values:
            try:
                numbers.append(int(v) if vr != "DS" and vr not in {"FL", "FD"} else float(v))
            except (TypeError, ValueError):
                return {"vr": vr}
        return {"vr": vr, "Value": numbers}
    return {"vr": vr, "Value": [v if v != "" else None for v in values]}


def attributes(items: dict[str, Any]) -> dict[str, Any]:
    """Keyword → value to a DICOM JSON object (keys sorted, as tags)."""
    out = {tag_of(keyword): element(vr_of(keyword), value) for keyword, value in items.items()}
    return dict(sorted(out.items()))
