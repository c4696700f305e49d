"""Re-encode a stored instance in another transfer syntax (PS3.18 8.7.3.5.2, PS3.5 A.4).

Offered: the stored syntax (the bytes as stored), Explicit and Implicit VR Little
Endian (decompressed), RLE Lossless, JPEG 2000 Lossless (pydicom + pylibjpeg-openjpeg)
and HTJ2K Lossless (imagecodecs' OpenJPH: pylibjpeg cannot encode HTJ2K). All are
lossless from the decoded pixels; lossy targets are not offered, so a client never
gets a lossy copy it did not know it asked for. Frames are decoded through
`pixels.read_frame`, with its bounds; the result is built in memory, bounded by
NOCTISPRO_IMAGING_MAX_PIXEL_BYTES.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from noctispro.imaging.errors import ImagingError, UnsupportedImage, UnsupportedTransferSyntax
from noctispro.imaging.pixels import ImageInfo, Limits, Source, open_source, read_frame, read_info

NATIVE_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
TARGETS = NATIVE_TARGETS | {RLELossless, JPEG2000Lossless, HTJ2KLossless}


def can_transcode(stored: str, target: str) -> bool:
    """Whether `transcode` offers `target` for an instance stored in `stored`."""
    return UID(target) == UID(stored) or UID(target) in TARGETS


def transcode(src: Source, transfer_syntax_uid: str, *, limits: Limits | None = None) -> bytes:
    """The instance as a Part 10 file in `transfer_syntax_uid`; the same SOP Instance UID."""
    target = UID(transfer_syntax_uid)
    limits = limits or Limits.from_settings()
    with open_source(src) as f:
        info = read_info(f, limits)
        if target == info.transfer_syntax_uid:
            f.seek(0)
            return f.read()
        if target not in TARGETS:
            raise UnsupportedTransferSyntax(
                f"transcoding to {target} ({target.name}) is not offered; "
                f"offered: {', '.join(sorted(TARGETS))} or the stored syntax"
            )
        pixels, photometric = _decode_all(f, info, limits)
        f.seek(0)
        try:
            ds = dcmread(f)
        except Exception as exc:
            raise UnsupportedImage(f"the data set could not be read: {exc}") from exc
    # Decoded pixels are in native byte order: the data set becomes little endian. Every
    # element is parsed first, so none is copied raw in its old byte order.
    for _ in ds.iterall():
        pass
    ds.set_original_encoding(False, True, ds.original_character_set)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # A lossless change of transfer syntax keeps the SOP Instance UID (PS3.5 A.4).
    ds.set_pixel_data(pixels, photometric, info.bits_stored, generate_instance_uid=False)
    if "NumberOfFrames" not in ds and "NumberOfFrames" in info.dataset:
        ds.NumberOfFrames = info.number_of_frames  # a multi-frame IOD keeps it (Type 1)
    try:
        if target in (RLELossless, JPEG2000Lossless):
            ds.compress(target, pixels, generate_instance_uid=False)
        elif target == HTJ2KLossless:
            _compress_htj2k(ds, pixels, info)
    except ImagingError:
        raise
    except Exception as exc:
        # e.g. OpenJPEG needs at least 32 x 32 pixels for its 6 resolution levels.
        raise UnsupportedTransferSyntax(f"encoding as {target.name} failed: {exc}") from exc
    ds.file_meta.TransferSyntaxUID = target
    out = io.BytesIO()
    # dcmwrite, unlike save_as, re-encodes a data set read as big endian.
    dcmwrite(out, ds, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True)
    return out.getvalue()


def _decode_all(f: BinaryIO, info: ImageInfo, limits: Limits) -> tuple[np.ndarray, str]:
    frames = []
    photometric = info.photometric_interpretation
    for index in range(info.number_of_frames):
        frame = read_frame(f, index, info=info, limits=limits)
        frames.append(frame.pixels)
        photometric = frame.photometric_interpretation
    pixels = frames[0] if len(frames) == 1 else np.stack(frames)
    pixels = pixels.astype(pixels.dtype.newbyteorder("="), copy=False)  # big endian sources
    if pixels.dtype.kind == "f":
        raise UnsupportedImage("float pixel data cannot be transcoded to integer Pixel Data")
    return pixels, photometric


def _compress_htj2k(ds: Dataset, pixels: np.ndarray, info: ImageInfo) -> None:
    """HTJ2K Lossless (1.2.840.10008.1.2.4.201): reversible, no colour transform."""
    try:
        import imagecodecs
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UnsupportedTransferSyntax("HTJ2K encoding needs imagecodecs") from exc
    frames = pixels if info.number_of_frames > 1 else pixels[np.newaxis]
    encoded = [
        bytes(imagecodecs.htj2k_encode(np.ascontiguousarray(frame), reversible=True, rgb=False))
        for frame in frames
    ]
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
