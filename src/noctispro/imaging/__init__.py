"""The imaging pipeline: decode, look-up tables, render, cache, transcode. Pure functions:
no database, no HTTP, no DIMSE (DESIGN §4). docs/imaging.md has the whole story.

A stored file is a `Source`: a path, an open binary file, or a callable that opens one
(`lambda: store.open(key)`), so a cache hit never opens the blob. Frame indexes are
0-based, as in pydicom (DICOMweb's frame numbers are 1-based: pass number - 1).

- `pixels.read_info(src)` → `ImageInfo`: the Image Pixel module, checked against
  NOCTISPRO_IMAGING_MAX_FRAME_BYTES / _MAX_PIXEL_BYTES and the bytes present.
- `pixels.read_frame(src, k)` → `Frame` (numpy array + its photometric interpretation):
  frame k alone, any transfer syntax pydicom and the pylibjpeg plugins decode.
- `pixels.stored_frame(src, k)` → frame k's bytes as stored (WADO-RS frames).
  `Frame.little_endian_bytes()` → decoded samples, uncompressed little endian.
- `lut.Window.parse("40,400,linear")`, `lut.display_transform(ds, k)`, `lut.to_gray8`.
- `render.render(src, k, window=, viewport=, media_type=, quality=, cache_key=)` → JPEG
  or PNG bytes; `render.thumbnail(src, size=128)`; `render.Viewport.parse("512,512")`.
- `cache.cached_frame(src, k, cache_key=)`: the process-wide LRU of decoded frames.
- `transcode.transcode(src, transfer_syntax_uid)` → a whole Part 10 file in that syntax.

Every failure is an `ImagingError` subclass with a message (errors.py): NoPixelData,
UnsupportedImage, CorruptPixelData, PixelDataTooLarge, FrameOutOfRange,
UnsupportedTransferSyntax, InvalidRenderParameter.
"""

from noctispro.imaging.errors import (
    CorruptPixelData,
    FrameOutOfRange,
    ImagingError,
    InvalidRenderParameter,
    NoPixelData,
    PixelDataTooLarge,
    UnsupportedImage,
    UnsupportedTransferSyntax,
)

__all__ = [
    "CorruptPixelData",
    "FrameOutOfRange",
    "ImagingError",
    "InvalidRenderParameter",
    "NoPixelData",
    "PixelDataTooLarge",
    "UnsupportedImage",
    "UnsupportedTransferSyntax",
]
