"""A header as DICOM JSON (PS3.18 F.2), for files that are looked at, not stored."""

from __future__ import annotations

from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from noctispro.conf import get_settings
from noctispro.core.dicomfile import InvalidDicom, inspect_file

INLINE_LIMIT = 64 * 1024
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


class HeaderError(ValueError):
    pass


def _drop_bulk(ds: Dataset) -> None:
    """Drop large binary values: with nothing stored there is no BulkDataURI to give."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                _drop_bulk(item)
        elif elem.VR in BINARY_VRS and len(elem.value or b"") > INLINE_LIMIT:
            del ds[elem.tag]


def header_as_dicom_json(fp: BinaryIO) -> dict[str, Any]:
    """File meta and data set header (no pixel data) of a checked file, as DICOM JSON."""
    s = get_settings()
    try:
        layout = inspect_file(fp, max_bytes=s.max_instance_bytes, max_depth=s.max_sequence_depth)
    except InvalidDicom as exc:
        raise HeaderError(exc.message) from exc
    fp.seek(0)
    try:
        ds = dcmread(fp, force=not layout.has_file_meta, stop_before_pixels=True)
        _drop_bulk(ds)
        result = ds.to_json_dict()
        if layout.has_file_meta:
            meta = ds.file_meta
            _drop_bulk(meta)
            result = meta.to_json_dict() | result
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        EOFError,
        OSError,
        RecursionError,
    ) as exc:
        raise HeaderError(f"header cannot be parsed: {exc}") from exc
    return result
