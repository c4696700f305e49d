"""A frame → 8-bit image → JPEG or PNG, scaled to a viewport (PS3.18 8.3.5.1).

Grayscale frames go through `lut` (Modality LUT, VOI, presentation). Colour frames are
shown as stored: RGB as is (scaled to 8 bits when Bits Stored > 8), YBR converted to
RGB by the decoder, PALETTE COLOR through its palette (PS3.3 C.7.6.3.1.5); windows do
not apply to colour (PS3.3 C.11.2). JPEG baseline and PNG are encoded by Pillow.
"""

from __future__ import annotations

import io
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image
from pydicom.pixels.processing import apply_color_lut, convert_color_space

from noctispro.conf import get_settings
from noctispro.imaging.cache import FrameCache, cached_frame, cached_info
from noctispro.imaging.errors import InvalidRenderParameter, UnsupportedImage
from noctispro.imaging.lut import Window, display_transform, to_gray8
from noctispro.imaging.pixels import Frame, ImageInfo, Limits, Source

MAX_VIEWPORT = 8192
THUMBNAIL_SIZE = 128


class MediaType(StrEnum):
    JPEG = "image/jpeg"
    PNG = "image/png"


@dataclass(frozen=True)
class Viewport:
    """PS3.18 8.3.5.1.3 `viewport=vw,vh[,sx,sy,sw,sh]`: fit the (cropped) image in vw x vh.

    The aspect ratio is kept; the image is scaled up or down to fit.
    """

    width: int
    height: int
    source: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh in image pixels

    def __post_init__(self) -> None:
        if not (0 < self.width <= MAX_VIEWPORT and 0 < self.height <= MAX_VIEWPORT):
            raise InvalidRenderParameter(
                f"viewport {self.width}x{self.height} must be 1..{MAX_VIEWPORT} on each side"
            )
        if self.source is not None and (self.source[2] <= 0 or self.source[3] <= 0):
            raise InvalidRenderParameter("viewport source width and height must be positive")

    @classmethod
    def parse(cls, text: str) -> Viewport:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError as exc:
            raise InvalidRenderParameter(f"viewport {text!r} is not integers") from exc
        if len(values) == 2:
            return cls(values[0], values[1])
        if len(values) == 6:
            sx, sy, sw, sh = values[2:]
            return cls(values[0], values[1], (sx, sy, sw, sh))
        raise InvalidRenderParameter(f"viewport {text!r} is not vw,vh or vw,vh,sx,sy,sw,sh")


def to_display(frame: Frame, info: ImageInfo, window: Window | None = None) -> np.ndarray:
    """One decoded frame → uint8 (rows, columns) grayscale or (rows, columns, 3) RGB."""
    pixels = frame.pixels
    photometric = frame.photometric_interpretation
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return to_gray8(pixels, display_transform(info.dataset, frame.index), window)
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(pixels, info.dataset)
        except Exception as exc:
            raise UnsupportedImage(f"the palette colour lookup tables are unusable: {exc}") from exc
        bits = int(info.dataset.RedPaletteColorLookupTableDescriptor[2])
        return _scale_to_8bit(rgb, 8 if rgb.dtype == np.uint8 else bits)
    if photometric.startswith("YBR"):
        pixels = convert_color_space(np.asarray(pixels), photometric, "RGB")
    return _scale_to_8bit(pixels, info.bits_stored)


def _scale_to_8bit(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8 and bits <= 8:
        return rgb
    top = float(2**bits - 1)
    return np.rint(np.clip(rgb.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def fit(image: np.ndarray, viewport: Viewport | None) -> Image.Image:
    """Crop to the viewport's source rectangle and scale to fit it, keeping the aspect."""
    img = Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB")
    if viewport is None:
        return img
    if viewport.source is not None:
        sx, sy, sw, sh = viewport.source
        img = img.crop((sx, sy, sx + sw, sy + sh))
    scale = min(viewport.width / img.width, viewport.height / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size == img.size:
        return img
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    return img.resize(size, method)


def encode(img: Image.Image, media_type: MediaType, quality: int | None = None) -> bytes:
    """JPEG baseline (quality 1-100, default NOCTISPRO_IMAGING_JPEG_QUALITY) or PNG."""
    out = io.BytesIO()
    if media_type is MediaType.JPEG:
        q = get_settings().imaging_jpeg_quality if quality is None else quality
        if not 1 <= q <= 100:
            raise InvalidRenderParameter(f"quality {q} must be 1..100")
        img.save(out, format="JPEG", quality=q)
    else:
        img.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def render(
    src: Source,
    index: int = 0,
    *,
    window: Window | None = None,
    viewport: Viewport | None = None,
    media_type: MediaType = MediaType.JPEG,
    quality: int | None = None,
    cache_key: Hashable | None = None,
    cache: FrameCache | None = None,
    limits: Limits | None = None,
) -> bytes:
    """Render frame `index` (0-based) of `src`; the decoded frame is cached."""
    info, frame = cached_frame(src, index, cache_key=cache_key, cache=cache, limits=limits)
    return encode(fit(to_display(frame, info, window), viewport), media_type, quality)


def thumbnail(
    src: Source,
    *,
    size: int = THUMBNAIL_SIZE,
    media_type: MediaType = MediaType.JPEG,
    quality: int | None = None,
    cache_key: Hashable | None = None,
    cache: FrameCache | None = None,
    limits: Limits | None = None,
) -> bytes:
    """A small picture of the instance: its middle frame fitted in size x size."""

    info = cached_info(src, cache_key=cache_key, cache=cache, limits=limits)
    return render(
        src,
        info.number_of_frames // 2,
        viewport=Viewport(size, size),
        media_type=media_type,
        quality=quality,
        cache_key=cache_key,
        cache=cache,
        limits=limits,
    )
