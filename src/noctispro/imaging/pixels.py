"""Decode one frame of a stored instance without decoding the others (PS3.5 8.2, A.4).

`read_info` reads the header up to the Pixel Data element and checks the Image Pixel
module (PS3.3 C.7.6.3) against the configured caps and against the bytes actually
there, before anything is allocated for pixels. `read_frame` then decodes frame k:
native data by seeking to that frame, encapsulated data by reading only that frame's
fragments (Basic or Extended Offset Table, else a walk over the fragment headers).
The codestream header of a compressed frame (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ)
is checked against Rows, Columns and Samples per Pixel before a codec sees it, so a
frame that claims 60000x60000 inside a 512x512 image is refused, not decoded.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import _get_jpg_parameters, as_pixel_options
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    DeflatedExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from noctispro.conf import Settings, get_settings
from noctispro.imaging.errors import (
    CorruptPixelData,
    FrameOutOfRange,
    ImagingError,
    NoPixelData,
    PixelDataTooLarge,
    UnsupportedImage,
)

Source = str | os.PathLike[str] | BinaryIO | Callable[[], BinaryIO]
"""A stored file: a path, an open binary file, or a callable that opens one (so a
cache hit never has to open the blob)."""

PIXEL_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)
SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"})
JPEG_FAMILY = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
    }
)
J2K_FAMILY = frozenset(
    {
        JPEG2000Lossless,
        JPEG2000,
        JPEG2000MCLossless,
        JPEG2000MC,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        HTJ2K,
    }
)
SUPPORTED_BITS_ALLOCATED = frozenset({1, 8, 16, 32, 64})
SUPPORTED_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "PALETTE COLOR",
    }
)
HEADER_VALUE_CAP = 16 * 1024 * 1024
# Room for the header of a deflated data set on top of its pixels.
DEFLATED_HEADER_SLACK = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps checked before any pixel is allocated (NOCTISPRO_IMAGING_MAX_*)."""

    max_frame_bytes: int
    max_pixel_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Limits:
        s = settings or get_settings()
        return cls(s.imaging_max_frame_bytes, s.imaging_max_pixel_bytes)


@dataclass(frozen=True)
class ImageInfo:
    """The Image Pixel module of one instance and where its pixel data is."""

    transfer_syntax_uid: UID
    dataset: Dataset  # every element before the pixel data (LUTs, functional groups)
    rows: int
    columns: int
    number_of_frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    pixel_keyword: str
    pixel_vr: str | None
    value_offset: int  # start of the pixel data value (the Basic Offset Table item if encapsulated)
    value_length: int | None  # None: encapsulated, undefined length
    number_of_fragments: int
    header_bytes: int
    deflated: bool

    @property
    def is_encapsulated(self) -> bool:
        return self.value_length is None

    @property
    def is_color(self) -> bool:
        return self.samples_per_pixel > 1 or self.photometric_interpretation == "PALETTE COLOR"

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame (bit-packed data is unpacked to one byte a pixel)."""
        return self.rows * self.columns * self.samples_per_pixel * max(1, self.bits_allocated // 8)

    @property
    def stored_frame_bytes(self) -> int:
        """Bytes one frame takes in native (uncompressed) pixel data."""
        samples = self.rows * self.columns * self.samples_per_pixel
        if self.bits_allocated == 1:
            return (samples + 7) // 8
        size = samples * (self.bits_allocated // 8)
        if self.photometric_interpretation == "YBR_FULL_422":
            size = size // 3 * 2  # two chroma samples shared by two pixels (PS3.3 C.7.6.3.1.2)
        return size

    def decode_options(self) -> dict[str, Any]:
        opts = as_pixel_options(self.dataset)
        opts.update(
            number_of_frames=self.number_of_frames,
            pixel_keyword=self.pixel_keyword,
            transfer_syntax_uid=self.transfer_syntax_uid,
        )
        if self.pixel_vr:
            opts["pixel_vr"] = self.pixel_vr
        return opts


@dataclass(frozen=True)
class Frame:
    """One decoded frame: (rows, columns) or (rows, columns, samples), planar config 0.

    `photometric_interpretation` is that of `pixels`: YBR data comes back as RGB unless
    decoded with raw=True.
    """

    pixels: np.ndarray
    photometric_interpretation: str
    index: int

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def little_endian_bytes(self) -> bytes:
        """The samples as uncompressed little-endian bytes, planar configuration 0.

        For WADO-RS `application/octet-stream` frames (PS3.18 8.7.3.5.2); bit-packed
        sources come back one byte a pixel, as decoded.
        """
        return self.pixels.astype(self.pixels.dtype.newbyteorder("<"), copy=False).tobytes()


@contextmanager
def open_source(src: Source) -> Iterator[BinaryIO]:
    """Yield a seekable binary file for `src`; close it only if we opened it."""
    if isinstance(src, str | os.PathLike):
        with open(src, "rb") as opened:
            yield opened
    elif callable(src):
        f = src()
        try:
            yield f
        finally:
            f.close()
    else:
        start = src.tell()
        try:
            yield src
        finally:
            src.seek(start)


def read_info(src: Source, limits: Limits | None = None) -> ImageInfo:
    """Read and check the header of `src` up to its pixel data; no pixel is decoded."""
    with open_source(src) as f:
        return _read_info(f, limits or Limits.from_settings())


def read_frame(
    src: Source,
    index: int,
    *,
    info: ImageInfo | None = None,
    limits: Limits | None = None,
    raw: bool = False,
) -> Frame:
    """Decode frame `index` (0-based) of `src`; the other frames are not decoded.

    raw=False converts YBR_FULL / YBR_FULL_422 to RGB (as pydicom's pixel_array does);
    raw=True keeps the stored colour space.
    """
    limits = limits or Limits.from_settings()
    with open_source(src) as f:
        if info is None:
            info = _read_info(f, limits)
        if not 0 <= index < info.number_of_frames:
            raise FrameOutOfRange(
                f"frame index {index} is outside 0..{info.number_of_frames - 1} "
                f"(Number of Frames {info.number_of_frames})"
            )
        if info.deflated:
            body, _ = _inflate(f, limits)
            return _decode(body, info, index, limits, raw)
        return _decode(f, info, index, limits, raw)


def stored_frame(src: Source, index: int, *, info: ImageInfo | None = None) -> bytes:
    """The bytes of frame `index` as stored: a compressed codestream or native samples.

    For WADO-RS frame retrieval in the stored transfer syntax (PS3.18 8.7.3.5). Native
    frames keep the stored byte order (big endian for Explicit VR Big Endian); for
    little-endian samples of any syntax use `read_frame(...).pixels`.
    """
    limits = Limits.from_settings()
    with open_source(src) as f:
        if info is None:
            info = _read_info(f, limits)
        if not 0 <= index < info.number_of_frames:
            raise FrameOutOfRange(f"frame index {index} is outside 0..{info.number_of_frames - 1}")
        body: BinaryIO = f
        if info.deflated:
            body, _ = _inflate(f, limits)
        if info.is_encapsulated:
            return _encapsulated_frame(body, info, index)
        if info.bits_allocated == 1:
            raise UnsupportedImage("frames of bit-packed pixel data do not start on byte bounds")
        body.seek(info.value_offset + index * info.stored_frame_bytes)
        return body.read(info.stored_frame_bytes)


def _read_info(f: BinaryIO, limits: Limits) -> ImageInfo:
    meta, _ = _read_meta(f)
    tsyntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not tsyntax:
        raise UnsupportedImage("no Transfer Syntax UID in the file meta information")
    deflated = tsyntax == DeflatedExplicitVRLittleEndian
    body: BinaryIO = f
    if deflated:
        body, ds = _inflate(f, limits)
    else:
        f.seek(0)
        try:
            # Values over 16 MB before the pixels (private blobs) are not read: no header
            # value the pipeline needs is that large, and reading one costs memory.
            ds = dcmread(f, stop_before_pixels=True, defer_size=HEADER_VALUE_CAP)
        except Exception as exc:
            raise CorruptPixelData(f"the header could not be parsed: {exc}") from exc
    position = body.tell()
    file_size = body.seek(0, os.SEEK_END)
    body.seek(position)

    header = body.read(8)
    little = tsyntax.is_little_endian if not deflated else True
    endian = "<" if little else ">"
    if len(header) < 8:
        raise NoPixelData("the instance has no Pixel Data")
    group, element = struct.unpack(f"{endian}HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_KEYWORDS:
        raise NoPixelData("the instance has no Pixel Data")
    pixel_vr: str | None = None
    # Decide by what is in the file, not the meta: some writers mix encodings.
    if header[4:6].isalpha() and header[4:6].isupper():
        pixel_vr = header[4:6].decode()
        if header[4:6] in LONG_VRS:
            more = body.read(4)
            if len(more) < 4:
                raise CorruptPixelData("the file ends inside the Pixel Data element header")
            (length,) = struct.unpack(f"{endian}L", more)
        else:
            (length,) = struct.unpack(f"{endian}H", header[6:8])
    else:
        (length,) = struct.unpack(f"{endian}L", header[4:8])
    value_offset = body.tell()

    info = _image_pixel_module(ds, tsyntax, deflated, tag, pixel_vr, value_offset, length)
    _check_size(info, limits)
    if info.is_encapsulated:
        fragments = _count_fragments(body, value_offset, file_size, endian)
        if fragments < info.number_of_frames:
            raise CorruptPixelData(
                f"Number of Frames is {info.number_of_frames} but the encapsulated pixel data "
                f"holds {fragments} fragments; each frame needs at least one (PS3.5 A.4)"
            )
        info = replace(info, number_of_fragments=fragments)
    else:
        if length == UNDEFINED_LENGTH:
            raise CorruptPixelData(
                f"Pixel Data has an undefined length in the native transfer syntax {tsyntax.name}"
            )
        needed = _native_length(info)
        available = min(length, file_size - value_offset)
        if available < needed:
            raise CorruptPixelData(
                f"Pixel Data holds {available} bytes but {info.rows} rows x {info.columns} "
                f"columns x {info.number_of_frames} frames x {info.samples_per_pixel} samples "
                f"x {info.bits_allocated} bits need {needed}"
            )
    return info


def _image_pixel_module(
    ds: Dataset,
    tsyntax: UID,
    deflated: bool,
    tag: int,
    pixel_vr: str | None,
    value_offset: int,
    length: int,
) -> ImageInfo:
    def required(keyword: str) -> int:
        value = ds.get(keyword)
        if value is None or value == "":
            raise CorruptPixelData(f"the Image Pixel module has no {keyword} (PS3.3 C.7.6.3)")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise CorruptPixelData(f"{keyword} {value!r} is not a number") from exc

    rows, columns = required("Rows"), required("Columns")
    bits_allocated = required("BitsAllocated")
    samples = required("SamplesPerPixel")
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    representation = int(ds.get("PixelRepresentation") or 0)
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        raise CorruptPixelData(
            f"Number of Frames {ds.get('NumberOfFrames')!r} is not a number"
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation") or "").strip()
    if rows < 1 or columns < 1 or frames < 1:
        raise CorruptPixelData(
            f"Rows {rows}, Columns {columns} and Number of Frames {frames} must be at least 1"
        )
    if bits_allocated not in SUPPORTED_BITS_ALLOCATED:
        raise UnsupportedImage(f"Bits Allocated {bits_allocated} is not supported")
    if not 1 <= bits_stored <= bits_allocated:
        raise CorruptPixelData(f"Bits Stored {bits_stored} is not in 1..{bits_allocated}")
    if samples not in (1, 3):
        raise UnsupportedImage(f"Samples per Pixel {samples} is not supported")
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise UnsupportedImage(f"Photometric Interpretation {photometric!r} is not supported")
    if (samples == 3) != (photometric not in {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}):
        raise CorruptPixelData(
            f"Photometric Interpretation {photometric} with Samples per Pixel {samples}"
        )
    return ImageInfo(
        transfer_syntax_uid=tsyntax,
        dataset=ds,
        rows=rows,
        columns=columns,
        number_of_frames=frames,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=representation,
        photometric_interpretation=photometric,
        planar_configuration=int(ds.get("PlanarConfiguration") or 0),
        pixel_keyword=PIXEL_KEYWORDS[tag],
        pixel_vr=pixel_vr,
        value_offset=value_offset,
        value_length=None if tsyntax.is_encapsulated else length,
        number_of_fragments=0,
        header_bytes=value_offset,
        deflated=deflated,
    )


def _check_size(info: ImageInfo, limits: Limits) -> None:
    """Rows x Columns x Frames x samples x bytes against the caps (Python ints: no overflow)."""
    frame = info.frame_bytes
    if frame > limits.max_frame_bytes:
        raise PixelDataTooLarge(
            f"one frame of {info.rows} x {info.columns} x {info.samples_per_pixel} samples x "
            f"{info.bits_allocated} bits is {frame} bytes, over the cap of "
            f"{limits.max_frame_bytes} (NOCTISPRO_IMAGING_MAX_FRAME_BYTES)"
        )
    total = frame * info.number_of_frames
    if total > limits.max_pixel_bytes:
        raise PixelDataTooLarge(
            f"{info.number_of_frames} frames of {frame} bytes are {total} bytes, over the cap "
            f"of {limits.max_pixel_bytes} (NOCTISPRO_IMAGING_MAX_PIXEL_BYTES)"
        )


def _native_length(info: ImageInfo) -> int:
    if info.bits_allocated == 1:
        return (info.rows * info.columns * info.samples_per_pixel * info.number_of_frames + 7) // 8
    return info.stored_frame_bytes * info.number_of_frames


def _count_fragments(f: BinaryIO, offset: int, file_size: int, endian: str) -> int:
    """Walk the item headers of encapsulated pixel data (PS3.5 A.4); return the fragments.

    Each header is 8 bytes and each item must end inside the file, so this costs one
    small read per fragment and never reads a fragment's value.
    """
    f.seek(offset)
    items = 0
    position = offset
    while True:
        header = f.read(8)
        if len(header) < 8:
            raise CorruptPixelData("encapsulated pixel data ends without a sequence delimiter")
        group, element, length = struct.unpack(f"{endian}HHL", header)
        if (group, element) == SEQUENCE_DELIMITER:
            break
        if (group, element) != ITEM:
            raise CorruptPixelData(
                f"found ({group:04X},{element:04X}) instead of an item in encapsulated pixel data"
            )
        position += 8 + length
        if length == UNDEFINED_LENGTH or position > file_size:
            raise CorruptPixelData("an encapsulated pixel data item runs past the end of the file")
        f.seek(position)
        items += 1
    if items == 0:
        raise CorruptPixelData("encapsulated pixel data has no Basic Offset Table item")
    return items - 1  # the first item is the Basic Offset Table


def _inflate(f: BinaryIO, limits: Limits) -> tuple[BinaryIO, Dataset]:
    """Inflate a Deflated Explicit VR Little Endian data set (PS3.5 A.5), bounded.

    Returns the inflated data set positioned at its pixel data, and its header.
    """
    meta, start = _read_meta(f)
    f.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    cap = limits.max_pixel_bytes + DEFLATED_HEADER_SLACK
    out = bytearray()
    while chunk := f.read(1 << 20):
        try:
            out += inflater.decompress(chunk, cap + 1 - len(out))
        except zlib.error as exc:
            raise CorruptPixelData(f"the deflated data set does not inflate: {exc}") from exc
        if len(out) > cap or inflater.unconsumed_tail:
            raise PixelDataTooLarge(f"the deflated data set inflates past {cap} bytes")
    body = io.BytesIO(bytes(out))
    try:
        ds = read_dataset(
            body,
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=lambda tag, vr, length: int(tag) in PIXEL_KEYWORDS,
        )
    except Exception as exc:
        raise CorruptPixelData(f"the inflated data set could not be parsed: {exc}") from exc
    ds.file_meta = meta
    return body, ds


def _read_meta(f: BinaryIO) -> tuple[FileMetaDataset, int]:
    """The file meta information (PS3.10 7.1) and the offset where the data set starts.

    Read before the data set so a deflated one is never inflated without a bound.
    """
    f.seek(0)
    try:
        read_preamble(f, force=True)
        meta = _read_file_meta_info(f)
    except Exception as exc:
        raise CorruptPixelData(f"the file meta information could not be parsed: {exc}") from exc
    return meta, f.tell()


def _encapsulated_frame(f: BinaryIO, info: ImageInfo, index: int) -> bytes:
    f.seek(info.value_offset)
    ds = info.dataset
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        return get_frame(f, index, number_of_frames=info.number_of_frames, extended_offsets=offsets)
    except Exception as exc:
        raise CorruptPixelData(f"frame {index} could not be located: {exc}") from exc


def check_codestream(info: ImageInfo, data: bytes, limits: Limits) -> None:
    """Check a compressed frame's own header against the Image Pixel module."""
    tsyntax = info.transfer_syntax_uid
    if tsyntax in JPEG_FAMILY:
        params = _get_jpg_parameters(data)
        if "height" not in params:
            raise CorruptPixelData("the frame is not a JPEG codestream (no SOF marker)")
        rows, columns = int(params["height"]), int(params["width"])
        samples, precision = int(params["components"]), int(params["precision"])
    elif tsyntax in J2K_FAMILY:
        import openjpeg

        try:
            params = openjpeg.get_parameters(io.BytesIO(data))
        except Exception as exc:
            raise CorruptPixelData(f"the frame is not a JPEG 2000 codestream: {exc}") from exc
        rows, columns = int(params["rows"]), int(params["columns"])
        samples, precision = int(params["samples_per_pixel"]), int(params["precision"])
    else:
        return
    decoded = rows * columns * samples * max(1, (precision + 7) // 8)
    if decoded > limits.max_frame_bytes:
        raise PixelDataTooLarge(
            f"the codestream decodes to {rows} x {columns} x {samples} samples ({decoded} bytes), "
            f"over the cap of {limits.max_frame_bytes} (NOCTISPRO_IMAGING_MAX_FRAME_BYTES)"
        )
    if (rows, columns, samples) != (info.rows, info.columns, info.samples_per_pixel):
        raise CorruptPixelData(
            f"the codestream is {rows} x {columns} x {samples} samples but the Image Pixel "
            f"module says {info.rows} x {info.columns} x {info.samples_per_pixel}"
        )


def _decode(f: BinaryIO, info: ImageInfo, index: int, limits: Limits, raw: bool) -> Frame:
    try:
        decoder = get_decoder(info.transfer_syntax_uid)
    except NotImplementedError as exc:
        raise UnsupportedImage(
            f"no decoder for the transfer syntax {info.transfer_syntax_uid.name}"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedImage(f"no decoding plugin installed for {info.transfer_syntax_uid.name}")
    opts = info.decode_options()
    try:
        if info.is_encapsulated:
            data = _encapsulated_frame(f, info, index)
            check_codestream(info, data, limits)
            opts.pop("extended_offsets", None)
            opts["number_of_frames"] = 1
            arr, props = decoder.as_array(encapsulate([data]), index=0, raw=raw, **opts)
        else:
            f.seek(info.value_offset)
            arr, props = decoder.as_array(f, index=index, raw=raw, **opts)
    except ImagingError:
        raise
    except Exception as exc:
        raise CorruptPixelData(f"frame {index} could not be decoded: {exc}") from exc
    photometric = str(props.get("photometric_interpretation", info.photometric_interpretation))
    return Frame(pixels=arr, photometric_interpretation=photometric, index=index)
