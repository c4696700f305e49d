"""Render benchmark: one 512x512 CT frame to JPEG, in process, cold (decode) and warm (cached).

    .venv/bin/python bench/render/run.py [--cold 30] [--warm 300] [--quality 90]

A synthetic 512x512 16-bit signed CT slice (a smooth phantom with noise, not random
pixels, so JPEG costs what it costs on real images) is written in Explicit VR Little
Endian, RLE Lossless, JPEG 2000 Lossless and HTJ2K Lossless (by imaging.transcode).
For each: "cold" renders with an empty cache every time (read header, decode, LUT,
JPEG encode); "warm" renders from the cached decoded frame with a changing window
(LUT + JPEG encode), as scrolling back and window/level dragging do. Prints p50/p99
in milliseconds. No HTTP: this is the floor under WADO-RS /rendered.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.factories import make_ct  # noqa: E402

from noctispro.imaging.cache import FrameCache  # noqa: E402
from noctispro.imaging.lut import Window  # noqa: E402
from noctispro.imaging.render import MediaType, render  # noqa: E402
from noctispro.imaging.transcode import transcode  # noqa: E402

SYNTAXES = {
    "explicit-le": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "j2k-lossless": "1.2.840.10008.1.2.4.90",
    "htj2k-lossless": "1.2.840.10008.1.2.4.201",
}


def phantom(size: int = 512, seed: int = 0) -> np.ndarray:
    """Air, a body of soft tissue with bone and lung, CT-like noise; stored = HU + 1024."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    hu = np.full((size, size), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 < 1
    hu[body] = 40 + 30 * np.sin(6 * x[body]) * np.cos(4 * y[body])
    hu[(x**2 + (y + 0.1) ** 2) < 0.04] = 700  # a vertebra
    hu[((x - 0.35) ** 2 + y**2) < 0.05] = -800  # a lung
    hu += rng.normal(0, 12, hu.shape)
    return np.clip(np.rint(hu + 1024), -2048, 4095).astype(np.int16)


def write_sources(workdir: Path) -> dict[str, Path]:
    ds = make_ct(rows=512, columns=512)
    ds.PixelData = phantom().tobytes()
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    base = workdir / "explicit-le.dcm"
    ds.save_as(base, enforce_file_format=True)
    paths = {"explicit-le": base}
    for name, uid in SYNTAXES.items():
        if name != "explicit-le":
            paths[name] = workdir / f"{name}.dcm"
            paths[name].write_bytes(transcode(base, uid))
    return paths


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def time_renders(path: Path, count: int, *, cold: bool, quality: int) -> list[float]:
    cache = FrameCache(1 << 28)
    render(path, 0, window=Window(40, 400), cache=cache, quality=quality)  # warm-up imports
    out = []
    for i in range(count):
        if cold:
            cache = FrameCache(1 << 28)
        window = Window(40 + (i % 50), 400 + 2 * (i % 50))
        t0 = time.perf_counter()
        body = render(
            path, 0, window=window, media_type=MediaType.JPEG, cache=cache, quality=quality
        )
        out.append((time.perf_counter() - t0) * 1000)
        assert body[:2] == b"\xff\xd8"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=30)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noctispro-bench-render-") as tmp:
        paths = write_sources(Path(tmp))
        print(f"512x512 CT frame -> JPEG q{args.quality}, in process, times in ms")
        columns = ("cold p50", "cold p99", "warm p50", "warm p99")
        print(f"{'stored as':<16}{'file KB':>9}" + "".join(f"{c:>10}" for c in columns))
        for name, path in paths.items():
            cold = time_renders(path, args.cold, cold=True, quality=args.quality)
            warm = time_renders(path, args.warm, cold=False, quality=args.quality)
            print(
                f"{name:<16}{path.stat().st_size / 1000:>9.0f}"
                f"{statistics.median(cold):>10.2f}{percentile(cold, 99):>10.2f}"
                f"{statistics.median(warm):>10.2f}{percentile(warm, 99):>10.2f}"
            )


if __name__ == "__main__":
    main()
