"""Decoding: every pydicom / pydicom-data file with pixel data, bombs, short data, one frame."""

from __future__ import annotations

import io
import tracemalloc
import warnings
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from noctispro.imaging import (
    CorruptPixelData,
    FrameOutOfRange,
    ImagingError,
    NoPixelData,
    PixelDataTooLarge,
)
from noctispro.imaging.cache import FrameCache
from noctispro.imaging.pixels import Limits, read_frame, read_info, stored_frame
from noctispro.imaging.render import MediaType, render

LIMITS = Limits(max_frame_bytes=256 << 20, max_pixel_bytes=4 << 30)
CACHE = FrameCache(64 << 20)
TEST_DIRS = [
    Path(pydicom.__file__).parent / "data" / "test_files",
    Path(data_store.__file__).parent / "data",
]
# Files pydicom itself cannot decode; we must refuse them with an ImagingError too.
REFUSED = {
    "JPEG-lossy.dcm",  # 12-bit JPEG extended: no installed plugin decodes it
    "JPEG2000-embedded-sequence-delimiter.dcm",  # broken J2K codestream header
    "MR_truncated.dcm",  # short Pixel Data
    "badVR.dcm",  # Number of Frames "1A"
    "meta_missing_tsyntax.dcm",  # no Transfer Syntax UID
    "nested_priv_SQ.dcm",  # pixel data without an Image Pixel module
}


def _pixel_files() -> list[Path]:
    files = []
    for root in TEST_DIRS:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".json", ".txt", ".gz", ".bz2"):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ds = pydicom.dcmread(path)
                except Exception:
                    continue
            if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                files.append(path)
    return files


PIXEL_FILES = _pixel_files()


def _reference(path: Path) -> np.ndarray | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            return ds.pixel_array
        except Exception:
            return None


def _decode_every_frame(path: Path) -> None:
    info = read_info(path, LIMITS)
    for index in range(info.number_of_frames):
        read_frame(path, index, info=info, limits=LIMITS)


def test_inventory_covers_every_transfer_syntax() -> None:
    syntaxes = set()
    for path in PIXEL_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
            except Exception:
                continue
        syntaxes.add(str(meta.get("TransferSyntaxUID", "")))
    # Implicit/explicit LE, big endian, deflated, JPEG baseline/extended/lossless,
    # JPEG-LS lossless/near-lossless, JPEG 2000 lossless/lossy, RLE.
    for uid in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    ):
        assert uid in syntaxes
    assert len(PIXEL_FILES) > 150


@pytest.mark.parametrize("path", PIXEL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_test_file_decodes_like_pydicom_and_renders(path: Path) -> None:
    reference = _reference(path)
    if reference is None:
        assert path.name in REFUSED, "pydicom cannot decode this file: add it to REFUSED"
        with pytest.raises(ImagingError):
            _decode_every_frame(path)
        return
    assert path.name not in REFUSED
    info = read_info(path, LIMITS)
    frames = info.number_of_frames
    for index in sorted({0, frames // 2, frames - 1}):
        frame = read_frame(path, index, info=info, limits=LIMITS)
        expected = reference if frames == 1 else reference[index]
        assert frame.pixels.shape == expected.shape
        assert frame.pixels.dtype == expected.dtype
        np.testing.assert_array_equal(frame.pixels, expected)
    for media_type in MediaType:
        body = render(path, frames - 1, media_type=media_type, limits=LIMITS, cache=CACHE)
        img = Image.open(io.BytesIO(body))
        assert img.size == (info.columns, info.rows)
        assert img.format == ("JPEG" if media_type is MediaType.JPEG else "PNG")


def _image(rows: int, columns: int, frames: int, pixel_data: bytes, **extra: object) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = extra.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB" if meta.TransferSyntaxUID.is_encapsulated else "OW"
    if meta.TransferSyntaxUID.is_encapsulated:
        ds["PixelData"].is_undefined_length = True
    return ds


def _save(ds: Dataset, tmp_path: Path, name: str = "x.dcm") -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _assert_small_allocation(fn: object, exc: type[ImagingError]) -> ImagingError:
    tracemalloc.start()
    try:
        with pytest.raises(exc) as raised:
            fn()  # type: ignore[operator]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak allocation {peak} bytes"
    assert raised.value.message
    return raised.value


def test_huge_rows_columns_frames_refused_before_allocating(tmp_path: Path) -> None:
    path = _save(_image(65535, 65535, 2**31 - 1, b"\0" * 64), tmp_path)
    err = _assert_small_allocation(lambda: read_frame(path, 0, limits=LIMITS), PixelDataTooLarge)
    assert "NOCTISPRO_IMAGING_MAX_FRAME_BYTES" in err.message


def test_many_frames_over_total_cap_refused(tmp_path: Path) -> None:
    path = _save(_image(512, 512, 100_000, b"\0" * 64), tmp_path)
    err = _assert_small_allocation(lambda: read_info(path, LIMITS), PixelDataTooLarge)
    assert "NOCTISPRO_IMAGING_MAX_PIXEL_BYTES" in err.message


def test_short_pixel_data_refused(tmp_path: Path) -> None:
    path = _save(_image(512, 512, 4, b"\0" * (512 * 512 * 2 * 3)), tmp_path)
    err = _assert_small_allocation(lambda: read_frame(path, 3, limits=LIMITS), CorruptPixelData)
    assert "1572864" in err.message and "2097152" in err.message


def test_file_cut_inside_pixel_data_refused(tmp_path: Path) -> None:
    path = _save(_image(256, 256, 1, b"\1" * (256 * 256 * 2)), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    _assert_small_allocation(lambda: read_frame(path, 0, limits=LIMITS), CorruptPixelData)


def _jpeg_frame() -> tuple[Dataset, bytes]:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("JPGExtended.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    return ds, frame


def _patch_sof(frame: bytes, height: int, width: int) -> bytes:
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3"):
        at = frame.find(marker)
        if at >= 0:
            sof = bytearray(frame)
            sof[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
            return bytes(sof)
    raise AssertionError("no SOF marker")


def test_codestream_bigger_than_its_header_says_is_refused(tmp_path: Path) -> None:
    """A JPEG whose SOF says 65000 x 65000 inside a 1024 x 256 image: a bomb."""
    ds, frame = _jpeg_frame()
    ds.PixelData = encapsulate([_patch_sof(frame, 65000, 65000)])
    path = _save(ds, tmp_path)
    _assert_small_allocation(lambda: read_frame(path, 0, limits=LIMITS), PixelDataTooLarge)


def test_codestream_disagreeing_with_rows_columns_is_refused(tmp_path: Path) -> None:
    ds, frame = _jpeg_frame()
    ds.PixelData = encapsulate([_patch_sof(frame, 1024, 512)])
    path = _save(ds, tmp_path)
    err = _assert_small_allocation(lambda: read_frame(path, 0, limits=LIMITS), CorruptPixelData)
    assert "1024 x 512" in err.message


def test_more_frames_than_fragments_is_refused(tmp_path: Path) -> None:
    _, frame = _jpeg_frame()
    ds = _image(1024, 256, 50, encapsulate([frame]), transfer_syntax=JPEGExtended12Bit)
    ds.BitsStored, ds.HighBit = 12, 11
    path = _save(ds, tmp_path)
    with pytest.raises(CorruptPixelData, match=r"50 .*1 fragments"):
        read_info(path, LIMITS)


def test_one_frame_is_decoded_without_the_others(tmp_path: Path) -> None:
    """Frame 5 of an RLE multi-frame is garbage: frames 0 and 9 still decode."""
    src = pydicom.dcmread(pydicom.data.get_testdata_file("emri_small_RLE.dcm"))
    frames = list(generate_frames(src.PixelData, number_of_frames=10))
    frames[5] = b"\x01\x00\x00\x00" + b"\xff" * (len(frames[5]) - 4)
    src.PixelData = encapsulate(frames)
    path = _save(src, tmp_path)
    reference = pydicom.dcmread(pydicom.data.get_testdata_file("emri_small_RLE.dcm")).pixel_array
    np.testing.assert_array_equal(read_frame(path, 0, limits=LIMITS).pixels, reference[0])
    np.testing.assert_array_equal(read_frame(path, 9, limits=LIMITS).pixels, reference[9])
    with pytest.raises(CorruptPixelData, match="frame 5"):
        read_frame(path, 5, limits=LIMITS)


def test_frame_out_of_range_and_no_pixel_data(tmp_path: Path) -> None:
    path = Path(pydicom.data.get_testdata_file("emri_small.dcm"))
    with pytest.raises(FrameOutOfRange):
        read_frame(path, 10, limits=LIMITS)
    with pytest.raises(FrameOutOfRange):
        read_frame(path, -1, limits=LIMITS)
    ds = _image(2, 2, 1, b"\0" * 8)
    del ds.PixelData
    with pytest.raises(NoPixelData):
        read_info(_save(ds, tmp_path), LIMITS)


def test_stored_frame_returns_the_codestream_or_native_bytes() -> None:
    rle = Path(pydicom.data.get_testdata_file("emri_small_RLE.dcm"))
    ds = pydicom.dcmread(rle)
    expected = list(generate_frames(ds.PixelData, number_of_frames=10))
    assert stored_frame(rle, 3) == expected[3]
    native = Path(pydicom.data.get_testdata_file("emri_small.dcm"))
    raw = pydicom.dcmread(native).PixelData
    size = 64 * 64 * 2
    assert stored_frame(native, 7) == raw[7 * size : 8 * size]


def test_open_file_and_opener_sources() -> None:
    path = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    reference = pydicom.dcmread(path).pixel_array
    with path.open("rb") as f:
        f.seek(17)
        np.testing.assert_array_equal(read_frame(f, 0, limits=LIMITS).pixels, reference)
        assert f.tell() == 17  # the caller's file position is left as it was
    opener_frame = read_frame(lambda: path.open("rb"), 0, limits=LIMITS)
    np.testing.assert_array_equal(opener_frame.pixels, reference)


def test_rle_and_jpeg_baseline_generated(tmp_path: Path) -> None:
    """A generated 12-bit image with a BitsStored mask survives RLE encoding."""
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4096
    ds = _image(64, 64, 1, arr.tobytes(), BitsStored=12, HighBit=11)
    del ds.NumberOfFrames
    ds.compress(RLELossless, arr)
    path = _save(ds, tmp_path)
    np.testing.assert_array_equal(read_frame(path, 0, limits=LIMITS).pixels, arr)
    assert JPEGBaseline8Bit.is_encapsulated


def test_huge_private_value_in_the_header_is_not_read(tmp_path: Path) -> None:
    """A 40 MB private OB before the pixels is skipped, not loaded with the header."""
    arr = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    ds = _image(64, 64, 1, arr.tobytes())
    ds.add_new(0x00091010, "LO", "PRIVATE")
    ds.add_new(0x00091110, "OB", b"\0" * (40 << 20))
    path = _save(ds, tmp_path)
    tracemalloc.start()
    try:
        frame = read_frame(path, 0, limits=LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(frame.pixels, arr)
    assert peak < 16 << 20, f"peak allocation {peak} bytes"


def test_instance_from_the_blob_store_renders(tmp_path: Path) -> None:
    """The way WADO-RS will call it: an opener over the blob store, keyed by storage key."""
    from noctispro.storage import get_blob_store

    store = get_blob_store()
    source = Path(pydicom.data.get_testdata_file("MR_small_RLE.dcm"))
    key = store.put([source.read_bytes()])
    try:
        cache = FrameCache(1 << 24)
        body = render(lambda: store.open(key), 0, cache_key=key, cache=cache)
        assert Image.open(io.BytesIO(body)).size == (64, 64)
        assert ("frame", ("key", key), 0, False) in cache
    finally:
        store.delete(key)


def test_jpeg_2000_colour_transforms_come_back_as_rgb() -> None:
    """YBR_RCT (reversible) equals the uncompressed RGB; YBR_ICT differs only by loss."""
    data = Path(data_store.__file__).parent / "data"
    original = read_frame(data / "US1_UNCR.dcm", 0).pixels.astype(int)
    reversible = read_frame(data / "US1_J2KR.dcm", 0)
    irreversible = read_frame(data / "US1_J2KI.dcm", 0)
    assert reversible.photometric_interpretation == "RGB"
    np.testing.assert_array_equal(reversible.pixels, original)
    assert irreversible.photometric_interpretation == "RGB"
    assert np.abs(irreversible.pixels.astype(int) - original).mean() < 3


def test_little_endian_bytes_of_a_big_endian_frame() -> None:
    big = read_frame(Path(pydicom.data.get_testdata_file("MR_small_bigendian.dcm")), 0)
    little = read_frame(Path(pydicom.data.get_testdata_file("MR_small.dcm")), 0)
    assert big.little_endian_bytes() == little.little_endian_bytes()
    assert (
        little.little_endian_bytes()
        == pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).PixelData[: 64 * 64 * 2]
    )
