"""Transcoding: lossless round trips, checked by decoding the result with pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from noctispro.imaging import UnsupportedTransferSyntax
from noctispro.imaging.pixels import read_frame, read_info
from noctispro.imaging.transcode import can_transcode, transcode

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"
SOURCES = [
    TEST_FILES / "CT_small.dcm",  # explicit LE, signed 16-bit
    TEST_FILES / "MR_small_bigendian.dcm",  # big endian
    TEST_FILES / "image_dfl.dcm",  # deflated
    DATA_STORE / "emri_small_jpeg_2k_lossless.dcm",  # 10 frames, J2K, 12 bits stored
    TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline YBR_FULL
    TEST_FILES / "SC_ybr_full_422_uncompressed.dcm",
    DATA_STORE / "OBXXXX1A_rle.dcm",  # PALETTE COLOR, RLE
    DATA_STORE / "SC_rgb_16bit_2frame.dcm",
    TEST_FILES / "liver_1frame.dcm",  # 1 bit allocated
]
TARGETS = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    HTJ2KLossless,
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_lossless_round_trip(source: Path, target: str) -> None:
    info = read_info(source)
    expected = [read_frame(source, k, info=info).pixels for k in range(info.number_of_frames)]
    body = transcode(source, target)
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == target
    original = pydicom.dcmread(source, stop_before_pixels=True)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.PatientName == original.PatientName
    decoded = ds.pixel_array  # pydicom's decoders, not ours
    stacked = expected[0] if info.number_of_frames == 1 else np.stack(expected)
    np.testing.assert_array_equal(decoded, stacked)
    last = info.number_of_frames - 1  # and our own one-frame path reads the result
    np.testing.assert_array_equal(read_frame(io.BytesIO(body), last).pixels, expected[last])


def test_stored_syntax_is_returned_as_stored() -> None:
    path = DATA_STORE / "emri_small_jpeg_2k_lossless.dcm"
    assert transcode(path, JPEG2000Lossless) == path.read_bytes()
    assert can_transcode(JPEGLSLossless, JPEGLSLossless)
    assert can_transcode(JPEGLSLossless, HTJ2KLossless)


def test_too_small_for_jpeg_2000_is_refused_with_a_message() -> None:
    """OpenJPEG's 6 resolution levels need 32 x 32 pixels; a 10 x 45 image is refused."""
    with pytest.raises(UnsupportedTransferSyntax, match="encoding as JPEG 2000"):
        transcode(TEST_FILES / "JPEGLSNearLossless_16.dcm", JPEG2000Lossless)
    assert transcode(TEST_FILES / "JPEGLSNearLossless_16.dcm", HTJ2KLossless)


def test_unsupported_target_is_refused() -> None:
    assert not can_transcode(ExplicitVRLittleEndian, "1.2.840.10008.1.2.4.50")
    with pytest.raises(UnsupportedTransferSyntax, match="not offered"):
        transcode(TEST_FILES / "CT_small.dcm", "1.2.840.10008.1.2.4.50")  # lossy JPEG
