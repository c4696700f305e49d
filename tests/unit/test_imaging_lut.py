"""Modality LUT, VOI LUT, presentation: the formulas of PS3.3 C.11 and the file's own values."""

from __future__ import annotations

import io
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence

from noctispro.imaging import InvalidRenderParameter
from noctispro.imaging.cache import FrameCache
from noctispro.imaging.lut import VOIFunction, Window, display_transform, to_gray8
from noctispro.imaging.pixels import read_frame, read_info
from noctispro.imaging.render import MediaType, Viewport, render, thumbnail, to_display

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"


def test_linear_window_follows_ps3_3_c_11_2_1_2_1() -> None:
    w = Window(100, 11)
    # x <= c - 0.5 - (w-1)/2 → 0; x > c - 0.5 + (w-1)/2 → 255; linear between.
    assert w.apply(np.array([94.5, 105.5, 99.5])).tolist() == [0.0, 255.0, 127.5]
    assert Window(0, 1).apply(np.array([-0.5, -0.4])).tolist() == [0.0, 255.0]


def test_linear_exact_and_sigmoid() -> None:
    exact = Window(100, 10, VOIFunction.LINEAR_EXACT)
    assert exact.apply(np.array([95.0, 100.0, 105.0])).tolist() == [0.0, 127.5, 255.0]
    sigmoid = Window(100, 10, VOIFunction.SIGMOID)
    y = sigmoid.apply(np.array([100.0, 105.0, -1e6, 1e6]))
    assert y[0] == pytest.approx(127.5)
    assert y[1] == pytest.approx(255 / (1 + np.exp(-2)))
    assert y[2] == pytest.approx(0) and y[3] == pytest.approx(255)


def test_window_parse() -> None:
    assert Window.parse("40,400") == Window(40, 400)
    assert Window.parse("40, 400, linear-exact") == Window(40, 400, VOIFunction.LINEAR_EXACT)
    assert Window.parse("-600,1500,SIGMOID").function is VOIFunction.SIGMOID
    for bad in ("40", "a,b", "40,0", "40,400,cubic", "40,0.5,linear", "nan,4"):
        with pytest.raises(InvalidRenderParameter):
            Window.parse(bad)


def test_rescale_from_the_file() -> None:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    t = display_transform(ds)
    assert (t.rescale_slope, t.rescale_intercept) == (1.0, -1024.0)
    np.testing.assert_array_equal(
        t.modality(ds.pixel_array), apply_modality_lut(ds.pixel_array, ds)
    )


def test_modality_lut_sequence_like_pydicom() -> None:
    ds = pydicom.dcmread(DATA_STORE / "mlut_18.dcm")
    t = display_transform(ds)
    assert t.modality_lut is not None
    np.testing.assert_array_equal(
        t.modality(ds.pixel_array), apply_modality_lut(ds.pixel_array, ds)
    )


def test_voi_lut_sequence_like_pydicom() -> None:
    ds = pydicom.dcmread(DATA_STORE / "vlut_04.dcm")
    t = display_transform(ds)
    assert len(t.voi_luts) == 1 and not t.windows
    expected = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    expected = np.floor(expected * 255 / (2**16 - 1)).astype(np.uint8)
    np.testing.assert_array_equal(to_gray8(ds.pixel_array, t), expected)


def test_multiple_windows_first_by_default() -> None:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter = [40, 300]
    ds.WindowWidth = [400, 1500]
    ds.VOILUTFunction = "SIGMOID"
    t = display_transform(ds)
    assert t.windows == (
        Window(40, 400, VOIFunction.SIGMOID),
        Window(300, 1500, VOIFunction.SIGMOID),
    )


def _enhanced_ct_with_per_frame_values(tmp_path: Path) -> Path:
    ds = pydicom.dcmread(DATA_STORE / "eCT_Supplemental.dcm")
    shared = ds.SharedFunctionalGroupsSequence[0]
    del shared.PixelValueTransformationSequence
    del shared.FrameVOILUTSequence
    for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        transform = Dataset()
        transform.RescaleSlope = 1 + index
        transform.RescaleIntercept = -1024 * (1 + index)
        transform.RescaleType = "HU"
        frame.PixelValueTransformationSequence = Sequence([transform])
        voi = Dataset()
        voi.WindowCenter = 40 + 100 * index
        voi.WindowWidth = 400
        frame.FrameVOILUTSequence = Sequence([voi])
    path = tmp_path / "ect.dcm"
    ds.save_as(path)
    return path


def test_per_frame_functional_groups(tmp_path: Path) -> None:
    path = _enhanced_ct_with_per_frame_values(tmp_path)
    ds = read_info(path).dataset
    first, second = display_transform(ds, 0), display_transform(ds, 1)
    assert (first.rescale_slope, first.rescale_intercept) == (1.0, -1024.0)
    assert (second.rescale_slope, second.rescale_intercept) == (2.0, -2048.0)
    assert first.windows == (Window(40, 400),) and second.windows == (Window(140, 400),)
    frame = read_frame(path, 1)
    stored = frame.pixels.astype(np.float64)
    expected = np.floor(Window(140, 400).apply(stored * 2 - 2048)).astype(np.uint8)
    np.testing.assert_array_equal(to_display(frame, read_info(path)), expected)


def test_shared_functional_groups_apply_to_every_frame() -> None:
    ds = read_info(DATA_STORE / "eCT_Supplemental.dcm").dataset
    for index in (0, 1):
        t = display_transform(ds, index)
        assert (t.rescale_slope, t.rescale_intercept) == (1.0, -1024.0)
        assert t.windows == (Window(49, 102),)


def test_default_window_is_min_max_of_the_frame() -> None:
    pixels = np.array([[10, 20], [30, 110]], dtype=np.uint16)
    out = to_gray8(pixels, display_transform(Dataset()))
    assert out.min() == 0 and out.max() == 255
    assert out.tolist() == [[0, 25], [51, 255]]


def test_monochrome1_and_presentation_lut_shape_invert() -> None:
    pixels = np.array([[0, 100]], dtype=np.uint16)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert to_gray8(pixels, display_transform(ds), Window(50, 99)).tolist() == [[255, 0]]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE"
    assert to_gray8(pixels, display_transform(ds), Window(50, 99)).tolist() == [[255, 0]]
    ds.PresentationLUTShape = "IDENTITY"
    assert to_gray8(pixels, display_transform(ds), Window(50, 99)).tolist() == [[0, 255]]


def test_signed_and_float_frames() -> None:
    t = display_transform(Dataset())
    signed = np.array([[-2000, 0, 2000]], dtype=np.int16)
    assert to_gray8(signed, t, Window(0, 4000, VOIFunction.LINEAR_EXACT)).tolist() == [
        [0, 127, 255]
    ]
    floats = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    assert to_gray8(floats, t).tolist() == [[0, 127, 255]]


def test_palette_colour_like_pydicom() -> None:
    path = DATA_STORE / "OBXXXX1A.dcm"
    ds = pydicom.dcmread(path)
    info = read_info(path)
    rgb = to_display(read_frame(path, 0), info)
    expected = apply_color_lut(ds.pixel_array, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if expected.dtype != np.uint8:
        expected = np.rint(expected * (255 / (2**bits - 1))).astype(np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    assert rgb.shape == (*ds.pixel_array.shape, 3)


def test_ybr_full_422_renders_as_rgb() -> None:
    """Uncompressed YBR_FULL_422 and its RGB original render alike (PS3.3 C.7.6.3.1.2)."""
    ybr = TEST_FILES / "SC_ybr_full_422_uncompressed.dcm"
    frame = read_frame(ybr, 0)
    assert frame.photometric_interpretation == "RGB"
    rgb = to_display(frame, read_info(ybr))
    np.testing.assert_array_equal(rgb, pydicom.dcmread(ybr).pixel_array)
    raw = read_frame(ybr, 0, raw=True)
    assert raw.photometric_interpretation == "YBR_FULL"  # upsampled, not converted
    np.testing.assert_array_equal(to_display(raw, read_info(ybr)), rgb)
    # The same picture stored as RGB: chroma subsampling and rounding only.
    original = pydicom.dcmread(DATA_STORE / "SC_rgb.dcm").pixel_array.astype(int)
    assert np.abs(rgb.astype(int) - original).mean() < 3


def test_viewport_keeps_the_aspect_and_thumbnail_is_small() -> None:
    path = TEST_FILES / "JPGExtended.dcm"  # 1024 rows x 256 columns
    cache = FrameCache(1 << 26)
    body = render(path, viewport=Viewport(200, 200), cache=cache)
    assert Image.open(io.BytesIO(body)).size == (50, 200)
    body = render(path, viewport=Viewport.parse("512,4096"), media_type=MediaType.PNG, cache=cache)
    assert Image.open(io.BytesIO(body)).size == (512, 2048)
    body = render(path, viewport=Viewport.parse("100,100,0,0,256,256"), cache=cache)
    assert Image.open(io.BytesIO(body)).size == (100, 100)
    small = thumbnail(path, cache=cache)
    assert max(Image.open(io.BytesIO(small)).size) == 128
    for bad in ("0,10", "10", "a,b", "9000,10", "10,10,0,0,0,5"):
        with pytest.raises(InvalidRenderParameter):
            Viewport.parse(bad)


def test_jpeg_quality_changes_the_output() -> None:
    path = TEST_FILES / "CT_small.dcm"
    cache = FrameCache(1 << 26)
    low = render(path, window=Window(40, 400), quality=10, cache=cache)
    high = render(path, window=Window(40, 400), quality=95, cache=cache)
    assert len(low) < len(high)
    with pytest.raises(InvalidRenderParameter):
        render(path, quality=0, cache=cache)


def test_large_unsigned_values_use_an_offset_table() -> None:
    """32-bit values near 4e9 with a small range: no table from zero (no huge allocation)."""
    pixels = np.array([[4_000_000_000, 4_000_000_100]], dtype=np.uint32)
    out = to_gray8(pixels, display_transform(Dataset()))
    assert out.tolist() == [[0, 255]]


def test_lut_data_as_ow_bytes_in_either_byte_order() -> None:
    from noctispro.imaging.lut import LookupTable

    values = np.array([0, 1000, 4095], dtype=np.uint16)
    for little, dtype in ((True, "<u2"), (False, ">u2")):
        item = Dataset()
        item.LUTDescriptor = [3, 0, 12]
        item.add_new(0x00283006, "OW", values.astype(dtype).tobytes())
        lut = LookupTable.from_item(item, little_endian=little)
        assert lut is not None
        assert lut.apply(np.array([0, 1, 2, 9])).tolist() == [0, 1000, 4095, 4095]
