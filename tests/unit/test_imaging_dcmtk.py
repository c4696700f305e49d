"""Rendered output compared pixel by pixel with DCMTK's dcmj2pnm (an independent renderer)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from PIL import Image

from noctispro.imaging.cache import FrameCache
from noctispro.imaging.lut import VOIFunction, Window
from noctispro.imaging.render import MediaType, render

pytestmark = pytest.mark.skipif(shutil.which("dcmj2pnm") is None, reason="DCMTK not installed")

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"


def _file(name: str) -> Path:
    for root in (TEST_FILES, DATA_STORE):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(name)


def _dcmtk(path: Path, tmp_path: Path, *options: str, frame: int = 0) -> np.ndarray:
    out = tmp_path / f"dcmtk-{path.stem}-{frame}.png"
    subprocess.run(
        ["dcmj2pnm", "--write-png", "+F", str(frame + 1), *options, str(path), str(out)],
        check=True,
        capture_output=True,
    )
    return np.asarray(Image.open(out)).astype(np.int16)


def _ours(path: Path, window: Window | None = None, frame: int = 0) -> np.ndarray:
    body = render(path, frame, window=window, media_type=MediaType.PNG, cache=FrameCache(1 << 26))
    return np.asarray(Image.open(io.BytesIO(body))).astype(np.int16)


def _assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    assert diff.mean() <= 1.0, f"mean absolute difference {diff.mean():.3f}"
    # Rounding may differ by one level; nothing may differ by a real amount.
    assert np.percentile(diff, 99.9) <= 2, f"max difference {diff.max()}"


WINDOWED = [
    ("CT_small.dcm", 40, 400, 0),
    ("CT_small.dcm", 1000, 3000, 0),
    ("MR_small.dcm", 600, 1200, 0),
    ("MR_small.dcm", 1500, 500, 0),
    ("MR2_UNCR.dcm", 1000, 2000, 0),
    ("emri_small.dcm", 500, 1000, 4),
    ("eCT_Supplemental.dcm", 49, 102, 1),
    ("JPGExtended.dcm", 600, 1600, 0),  # JPEG extended 12-bit (DCMTK has no JPEG 2000)
    ("MR_small_RLE.dcm", 800, 1000, 0),
    ("emri_small_big_endian.dcm", 500, 1000, 9),
    ("693_UNCR.dcm", 8000, 12000, 0),
    ("RG1_UNCI.dcm", 16000, 20000, 0),  # MONOCHROME1
    ("RG3_UNCR.dcm", 512, 800, 0),  # MONOCHROME1, 10 bits
    ("mlut_18.dcm", 0, 2000, 0),  # Modality LUT Sequence
]


@pytest.mark.parametrize(("name", "center", "width", "frame"), WINDOWED)
def test_linear_window_matches_dcmtk(
    tmp_path: Path, name: str, center: float, width: float, frame: int
) -> None:
    path = _file(name)
    theirs = _dcmtk(path, tmp_path, "+Ww", str(center), str(width), "+Wfl", frame=frame)
    _assert_close(_ours(path, Window(center, width), frame), theirs)


@pytest.mark.parametrize(
    ("name", "center", "width"), [("CT_small.dcm", 40, 400), ("MR_small.dcm", 600, 1200)]
)
def test_sigmoid_window_matches_dcmtk(
    tmp_path: Path, name: str, center: float, width: float
) -> None:
    path = _file(name)
    theirs = _dcmtk(path, tmp_path, "+Ww", str(center), str(width), "+Wfs")
    _assert_close(_ours(path, Window(center, width, VOIFunction.SIGMOID)), theirs)


def test_voi_lut_sequence_matches_dcmtk(tmp_path: Path) -> None:
    path = _file("vlut_04.dcm")
    _assert_close(_ours(path), _dcmtk(path, tmp_path, "+Wl", "1"))


def test_window_from_the_file_matches_dcmtk(tmp_path: Path) -> None:
    path = _file("MR_small.dcm")  # Window Center 600, Width 1600
    _assert_close(_ours(path), _dcmtk(path, tmp_path, "+Wi", "1"))


def test_comparison_can_fail(tmp_path: Path) -> None:
    """The tolerance is tight enough to see a wrong window or a missed inversion."""
    path = _file("CT_small.dcm")
    theirs = _dcmtk(path, tmp_path, "+Ww", "40", "400")
    assert np.abs(_ours(path, Window(60, 400)) - theirs).mean() > 1.0
    mono1 = _file("RG1_UNCI.dcm")
    inverted = _dcmtk(mono1, tmp_path, "+Ww", "16000", "20000", "+P")
    assert np.abs(_ours(mono1, Window(16000, 20000)) - inverted).mean() > 10


@pytest.mark.parametrize(
    "name",
    [
        "US1_UNCR.dcm",  # RGB
        "SC_rgb.dcm",
        "SC_rgb_16bit.dcm",  # RGB, 16 bits stored
        "SC_ybr_full_uncompressed.dcm",  # YBR_FULL
        "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
        "color3d_jpeg_baseline.dcm",  # 120 frames, YBR_FULL_422
        "color-pl.dcm",  # planar configuration 1
        "OBXXXX1A.dcm",  # PALETTE COLOR
        "examples_palette.dcm",
    ],
)
def test_colour_matches_dcmtk(tmp_path: Path, name: str) -> None:
    path = _file(name)
    _assert_close(_ours(path), _dcmtk(path, tmp_path))
