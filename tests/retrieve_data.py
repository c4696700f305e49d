"""Shared data and peers for the retrieve tests (C-MOVE, C-GET, send to node).

The study is made of pydicom's test files in many transfer syntaxes, each given fresh
UIDs so they form one study with one series per file; what the archive stores is what
`noctispro import` read from these files, so received data sets are compared with the
files' own data sets, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from tests.factories import dataset_bytes
from tests.helpers import pydicom_test_file
from tests.integration.archive import free_port, wait_for_port

# One file per stored transfer syntax (uncompressed, deflated, big endian, compressed).
SOURCE_FILES = [
    "CT_small.dcm",  # Explicit VR Little Endian
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline
    "JPEG-lossy.dcm",  # JPEG Extended
    "JPEG-LL.dcm",  # JPEG Lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_RLE.dcm",  # RLE Lossless
]


@dataclass(frozen=True)
class Study:
    study_uid: str
    patient_id: str
    files: dict[str, Path]  # SOP Instance UID -> file
    series: dict[str, list[str]]  # Series Instance UID -> SOP Instance UIDs
    syntaxes: dict[str, str]  # SOP Instance UID -> transfer syntax UID

    def dataset(self, sop_uid: str) -> bytes:
        return dataset_bytes(self.files[sop_uid].read_bytes())


def make_study(folder: Path, patient_id: str, names: list[str] = SOURCE_FILES) -> Study:
    """Copies of the named test files as one study, one series each, fresh UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    files: dict[str, Path] = {}
    series: dict[str, list[str]] = {}
    syntaxes: dict[str, str] = {}
    for number, name in enumerate(names, start=1):
        ds = pydicom.dcmread(pydicom_test_file(name))
        sop_uid = generate_uid()
        series_uid = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.PatientID = patient_id
        ds.PatientName = f"Retrieve^{patient_id}"
        path = folder / f"{number:02d}-{name}"
        ds.save_as(path, enforce_file_format=True)
        files[sop_uid] = path
        series[series_uid] = [sop_uid]
        syntaxes[sop_uid] = str(ds.file_meta.TransferSyntaxUID)
    return Study(study_uid, patient_id, files, series, syntaxes)


def received(folder: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every file a storescp wrote."""
    out = {}
    for path in folder.iterdir():
        if path.is_file():
            meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
            out[str(meta.MediaStorageSOPInstanceUID)] = dataset_bytes(path.read_bytes())
    return out


@contextmanager
def storescp(folder: Path, ae_title: str = "DEST", *options: str) -> Iterator[int]:
    """DCMTK storescp writing exactly what it receives (+B); by default every syntax
    accepted (+xa), else as `options` say."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        ["storescp", "+B", *(options or ["+xa"]), "-aet", ae_title, "-od", str(folder), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
