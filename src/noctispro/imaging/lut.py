"""Grayscale pipeline: stored values → Modality LUT → VOI LUT → presentation (PS3.4 N.2).

- Modality LUT (PS3.3 C.11.1): Modality LUT Sequence if present, else Rescale Slope /
  Intercept; for enhanced multi-frame images the Pixel Value Transformation Sequence
  of the frame's Per-frame Functional Groups, else of the Shared Functional Groups
  (PS3.3 C.7.6.16), else the top-level attributes.
- VOI LUT (PS3.3 C.11.2): an explicit window wins; else the first Window Center/Width
  of the frame (Frame VOI LUT Sequence, per-frame then shared, then top level) with
  VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID (C.11.2.1.2/3); else the first
  item of the VOI LUT Sequence; else the min/max of the frame after the Modality LUT.
- Presentation: MONOCHROME1, or Presentation LUT Shape INVERSE, inverts the output
  (C.11.6.1; a MONOCHROME1 image with a Presentation LUT Shape of IDENTITY, which the
  standard does not allow, is still inverted).

Output is 8-bit (ymin 0, ymax 255). Integer frames go through one lookup table built
over the frame's value range, so a window/level change costs a table and one gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from noctispro.imaging.errors import InvalidRenderParameter

# Beyond this many distinct stored values a lookup table costs more than it saves.
MAX_TABLE_ENTRIES = 1 << 22


class VOIFunction(StrEnum):
    """VOI LUT Function (0028,1056), PS3.3 C.11.2.1.3."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Window:
    """Window Center / Width with its VOI LUT Function."""

    center: float
    width: float
    function: VOIFunction = VOIFunction.LINEAR

    def __post_init__(self) -> None:
        if not (np.isfinite(self.center) and np.isfinite(self.width)):
            raise InvalidRenderParameter("window center and width must be finite numbers")
        # C.11.2.1.2.1: LINEAR needs width >= 1; the others only width > 0.
        if self.function is VOIFunction.LINEAR and self.width < 1:
            raise InvalidRenderParameter(f"window width {self.width} must be at least 1")
        if self.width <= 0:
            raise InvalidRenderParameter(f"window width {self.width} must be greater than 0")

    @classmethod
    def parse(cls, text: str) -> Window:
        """Parse PS3.18 8.3.5.1.4 `window=center,width[,function]`.

        The function is linear, linear-exact or sigmoid (any case; default linear).
        """
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (2, 3):
            raise InvalidRenderParameter(f"window {text!r} is not center,width[,function]")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError as exc:
            raise InvalidRenderParameter(f"window {text!r}: center and width are numbers") from exc
        function = VOIFunction.LINEAR
        if len(parts) == 3:
            name = parts[2].upper().replace("-", "_")
            try:
                function = VOIFunction(name)
            except ValueError as exc:
                raise InvalidRenderParameter(
                    f"window function {parts[2]!r} is not linear, linear-exact or sigmoid"
                ) from exc
        return cls(center, width, function)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Map values to [0, 255] as float64 (PS3.3 C.11.2.1.2.1, C.11.2.1.3.1/2)."""
        x = np.asarray(x, dtype=np.float64)
        c, w = self.center, self.width
        if self.function is VOIFunction.SIGMOID:
            return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        if self.function is VOIFunction.LINEAR_EXACT:
            y = ((x - c) / w + 0.5) * 255.0
        elif w == 1:
            y = np.where(x <= c - 0.5, 0.0, 255.0)
        else:
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
        return np.clip(y, 0.0, 255.0)


@dataclass(frozen=True)
class LookupTable:
    """A Modality or VOI LUT: LUT Descriptor (entries, first mapped, bits) + LUT Data."""

    first_mapped: int
    bits: int
    data: np.ndarray

    @classmethod
    def from_item(cls, item: Dataset, little_endian: bool = True) -> LookupTable | None:
        descriptor = item.get("LUTDescriptor")
        if descriptor is None or "LUTData" not in item or len(descriptor) != 3:
            return None
        entries, first, bits = (int(v) for v in descriptor)
        entries = entries or 65536  # PS3.3 C.11.1.1.1: 0 means 2^16
        raw = item["LUTData"].value
        if isinstance(raw, bytes | bytearray):
            # OW LUT Data comes as bytes in the data set's byte order.
            word = "<u2" if little_endian else ">u2"
            dtype = word if bits > 8 or len(raw) >= 2 * entries else "u1"
            data = np.frombuffer(raw, dtype=dtype)
        else:
            data = np.asarray(list(raw) if not isinstance(raw, int) else [raw])
        data = data[:entries].astype(np.float64)
        if data.size == 0:
            return None
        if first >= 32768 and item["LUTDescriptor"].VR in ("US", "US or SS"):
            first -= 65536  # first mapped value read as US although the data are signed
        return cls(first_mapped=first, bits=bits, data=data)

    def apply(self, x: np.ndarray) -> np.ndarray:
        index = np.clip(np.rint(np.asarray(x) - self.first_mapped), 0, self.data.size - 1)
        return self.data[index.astype(np.intp)]

    @property
    def output_max(self) -> float:
        """Largest output value: 2^bits - 1, unless the data use more bits than declared."""
        top = float(2**self.bits - 1)
        peak = float(self.data.max())
        return top if peak <= top else float(2 ** int(np.ceil(np.log2(peak + 1))) - 1)


@dataclass(frozen=True)
class DisplayTransform:
    """Everything that maps one frame's stored values to display values."""

    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: LookupTable | None = None
    windows: tuple[Window, ...] = ()
    voi_luts: tuple[LookupTable, ...] = ()
    inverse: bool = False

    def modality(self, x: np.ndarray) -> np.ndarray:
        if self.modality_lut is not None:
            return self.modality_lut.apply(x)
        x = np.asarray(x, dtype=np.float64)
        if self.rescale_slope == 1.0 and self.rescale_intercept == 0.0:
            return x
        return x * self.rescale_slope + self.rescale_intercept

    def voi(self, values: np.ndarray, window: Window | None, default: Window) -> np.ndarray:
        if window is None and not self.windows and self.voi_luts:
            lut = self.voi_luts[0]
            return lut.apply(values) * (255.0 / lut.output_max)
        chosen = window or (self.windows[0] if self.windows else default)
        return chosen.apply(values)


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _frame_groups(ds: Dataset, index: int) -> list[Dataset]:
    """The functional group items that apply to frame `index`, most specific first."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        groups.append(shared)
    return groups


def _numbers(value: object) -> list[float]:
    """The numbers of a DS/IS/FD value, single or multi-valued; unreadable ones dropped."""
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = []
    for item in items:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            continue
    return out


def _windows(item: Dataset) -> tuple[Window, ...]:
    centers, widths = _numbers(item.get("WindowCenter")), _numbers(item.get("WindowWidth"))
    name = str(item.get("VOILUTFunction") or "LINEAR").strip().upper()
    function = VOIFunction(name) if name in VOIFunction.__members__ else VOIFunction.LINEAR
    windows = []
    for c, w in zip(centers, widths, strict=False):
        try:
            windows.append(Window(c, w, function))
        except InvalidRenderParameter:
            continue  # a bad stored window falls back to the next choice
    return tuple(windows)


def display_transform(ds: Dataset, index: int = 0) -> DisplayTransform:
    """Collect the Modality LUT, VOI and presentation of frame `index` from `ds`."""
    groups = _frame_groups(ds, index)
    # None (a data set built in memory) counts as little endian.
    little_endian = getattr(ds, "original_encoding", (False, True))[1] is not False

    slope, intercept = 1.0, 0.0
    source: Dataset = ds
    for group in groups:
        item = _first(group, "PixelValueTransformationSequence")
        if item is not None and "RescaleSlope" in item:
            source = item
            break
    slopes, intercepts = (
        _numbers(source.get("RescaleSlope")),
        _numbers(source.get("RescaleIntercept")),
    )
    if slopes and slopes[0] != 0:
        slope = slopes[0]
    if intercepts:
        intercept = intercepts[0]
    modality_item = _first(ds, "ModalityLUTSequence")
    modality_lut = (
        LookupTable.from_item(modality_item, little_endian) if modality_item is not None else None
    )

    windows: tuple[Window, ...] = ()
    for group in groups:
        item = _first(group, "FrameVOILUTSequence")
        if item is not None and (windows := _windows(item)):
            break
    if not windows:
        windows = _windows(ds)
    voi_luts = tuple(
        lut
        for item in ds.get("VOILUTSequence") or []
        if (lut := LookupTable.from_item(item, little_endian))
    )

    photometric = str(ds.get("PhotometricInterpretation") or "").strip()
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    inverse = photometric == "MONOCHROME1" or shape == "INVERSE"
    return DisplayTransform(slope, intercept, modality_lut, windows, voi_luts, inverse)


def default_window(modality_values_min: float, modality_values_max: float) -> Window:
    """The frame's full range, LINEAR_EXACT: min → 0, max → 255."""
    width = max(modality_values_max - modality_values_min, 1e-6)
    return Window((modality_values_min + modality_values_max) / 2, width, VOIFunction.LINEAR_EXACT)


def to_gray8(pixels: np.ndarray, t: DisplayTransform, window: Window | None = None) -> np.ndarray:
    """Stored values of one grayscale frame → 8-bit display values (uint8, same shape)."""
    if pixels.dtype.kind in "iub":
        lo, hi = int(pixels.min()), int(pixels.max())
        if hi - lo < MAX_TABLE_ENTRIES:
            table = _pipeline(np.arange(lo, hi + 1, dtype=np.int64), t, window)
            if 0 <= lo < MAX_TABLE_ENTRIES:  # index by the stored value itself: no subtraction
                return np.take(np.concatenate([np.zeros(lo, np.uint8), table]), pixels)
            return np.take(table, pixels.astype(np.int64) - lo)
    return _pipeline(pixels, t, window)


def _pipeline(values: np.ndarray, t: DisplayTransform, window: Window | None) -> np.ndarray:
    m = t.modality(values)
    default = default_window(float(np.min(m)), float(np.max(m))) if window is None else None
    y = t.voi(m, window, default or Window(0.0, 1.0))
    # Truncated to the integer below, as DCMTK does (dcmimgle dimoopxt.h).
    out = np.floor(np.clip(y, 0.0, 255.0)).astype(np.uint8)
    return 255 - out if t.inverse else out
