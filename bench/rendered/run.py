"""Rendered-frame and frame-retrieval benchmark over HTTP: NoctisPro vs Orthanc's DICOMweb.

    .venv/bin/python bench/rendered/run.py [--images 20] [--repeat 200] [--frames 256]
        [--frame-size 512] [--targets noctispro,orthanc] [--keep]

Both targets start fresh on free loopback ports (bench/dicomweb/run.py's NoctisPro and
Orthanc: `noctispro serve`; Debian's Orthanc with its DICOMweb plugin) and receive the
same files by DCMTK storescu: `--images` 512 x 512 16-bit CT slices (bench/render's
phantom, so JPEG costs what it costs on real images) and one multi-frame instance of
`--frames` frames of `--frame-size`² 16-bit pixels (Multi-frame Grayscale Word SC).

- rendered, cold: `GET .../frames/1/rendered` (Accept: image/jpeg) of each slice once,
  right after loading: read, decode, window, encode.
- rendered, warm: the same URL of one slice `--repeat` times.
- rendered, W/L drag: one slice with a new `window=` each request (the decoded frame is
  cached; LUT + encode every time). Orthanc's plugin may ignore `window`.
- frames: `GET .../frames/1,2,...,N` (`multipart/related; type="application/octet-stream"`)
  of the multi-frame instance, cold once and warm 5 times: MB/s and frames/s.

Each request is timed over HTTP keep-alive with one client (no concurrency). Results go
to bench/results/rendered-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from pydicom.uid import generate_uid

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.factories import make_ct, write  # noqa: E402

from bench.common import BenchError, machine_facts  # noqa: E402
from bench.dicomweb.run import run_targets, save_results, storescu  # noqa: E402
from bench.render.run import phantom  # noqa: E402

MULTIFRAME_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC Image Storage


def generate(root: Path, images: int, frames: int, frame_size: int) -> dict[str, object]:
    study, series = generate_uid(), generate_uid()
    slices = []
    for n in range(images):
        ds = make_ct(study_uid=study, series_uid=series, instance_number=n + 1, rows=512,
                     columns=512, patient_id="BENCH-RENDER")  # fmt: skip
        ds.PixelData = phantom(512, seed=n).tobytes()
        write(ds, root / "slices" / f"{n:04d}.dcm")
        slices.append(str(ds.SOPInstanceUID))
    mf = make_ct(study_uid=study, series_uid=generate_uid(), rows=frame_size,
                 columns=frame_size, patient_id="BENCH-RENDER")  # fmt: skip
    mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = MULTIFRAME_SC
    mf.NumberOfFrames = frames
    mf.FrameIncrementPointer = 0x00181063  # Frame Time
    mf.FrameTime = 40
    base = phantom(frame_size)
    mf.PixelData = np.stack([np.roll(base, k, axis=1) for k in range(frames)]).tobytes()
    write(mf, root / "multiframe" / "mf.dcm")
    return {
        "study": study,
        "series": series,
        "slices": slices,
        "mf_series": str(mf.SeriesInstanceUID),
        "mf": str(mf.SOPInstanceUID),
        "mf_bytes": len(mf.PixelData),
    }


def ms(fn: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    r = fn()
    r.read()
    elapsed = (time.perf_counter() - started) * 1000
    if r.status_code != 200:
        raise BenchError(f"{r.request.url}: HTTP {r.status_code} {r.text[:300]}")
    return elapsed, r


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "n": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 2),
    }


def run_target(target, data: Path, uids: dict, args, workdir: Path) -> dict:
    target.start(workdir)
    try:
        load_s = storescu(target.dicom_port, target.aet, data)
        # NoctisPro's worker makes the kept metadata of what arrived: let it finish first,
        # so the timings do not share the CPU with it (Orthanc has no such job).
        target.ready(len(uids["slices"]) + 1)
        out: dict[str, object] = {"load_seconds": round(load_s, 1)}
        jpeg = {"Accept": "image/jpeg"}
        study, series = uids["study"], uids["series"]

        def rendered_url(sop: str) -> str:
            return f"/studies/{study}/series/{series}/instances/{sop}/frames/1/rendered"

        with target.client() as client:
            cold = [ms(lambda s=s: client.get(rendered_url(s), headers=jpeg))[0]
                    for s in uids["slices"]]  # fmt: skip
            out["rendered_cold"] = summary(cold)
            url = rendered_url(uids["slices"][0])
            _, r = ms(lambda: client.get(url, headers=jpeg))
            if not r.content.startswith(b"\xff\xd8"):
                raise BenchError(f"{target.name}: /rendered is not a JPEG")
            out["jpeg_bytes"] = len(r.content)
            out["rendered_warm"] = summary(
                [ms(lambda: client.get(url, headers=jpeg))[0] for _ in range(args.repeat)]
            )
            out["rendered_window_drag"] = summary(
                [
                    ms(lambda n=n: client.get(f"{url}?window={n},400,linear", headers=jpeg))[0]
                    for n in range(args.repeat)
                ]
            )
            frames = ",".join(str(n) for n in range(1, args.frames + 1))
            mf = f"/studies/{study}/series/{uids['mf_series']}/instances/{uids['mf']}"
            mf_url = f"{mf}/frames/{frames}"
            octets = {"Accept": 'multipart/related; type="application/octet-stream"'}
            runs = []
            for _ in range(6):
                elapsed, r = ms(lambda: client.get(mf_url, headers=octets))
                if len(r.content) < uids["mf_bytes"]:
                    raise BenchError(f"{target.name}: {len(r.content)} bytes of frames")
                runs.append(elapsed)
            mb = uids["mf_bytes"] / 1e6
            warm = statistics.median(runs[1:])
            out["frames"] = {
                "cold_ms": round(runs[0], 1),
                "warm_ms": round(warm, 1),
                "cold_MBps": round(mb / (runs[0] / 1000), 1),
                "warm_MBps": round(mb / (warm / 1000), 1),
                "warm_frames_per_s": round(args.frames / (warm / 1000)),
            }
        return out
    finally:
        target.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--frame-size", type=int, default=512)
    parser.add_argument("--targets", default="noctispro,orthanc")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rendered-"))
    results: dict[str, object] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(workdir),
        "args": vars(args),
        "targets": {},
    }
    try:
        print(f"generating {args.images} slices + a {args.frames}-frame instance in {workdir}")
        uids = generate(workdir / "data", args.images, args.frames, args.frame_size)
        results["targets"] = run_targets(run_target, uids, args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    save_results("rendered", results)
    return 0


def report(results: dict) -> None:
    targets = results["targets"]
    names = list(targets)
    both = {"noctispro", "orthanc"} <= set(names)
    print()
    print(f"{'rendered 512x512 JPEG':28}" + "".join(f"{n + ' p50/p99 ms':>26}" for n in names)
          + (f"{'p50 ratio':>11}" if both else ""))  # fmt: skip
    for key in ("rendered_cold", "rendered_warm", "rendered_window_drag"):
        line = f"{key:28}"
        for n in names:
            m = targets[n][key]
            line += f"{m['p50_ms']:>16.1f}{m['p99_ms']:>10.1f}"
        if both:
            ratio = targets["orthanc"][key]["p50_ms"] / targets["noctispro"][key]["p50_ms"]
            line += f"{ratio:>10.1f}x"
        print(line)
    print()
    for n in names:
        f = targets[n]["frames"]
        print(
            f"{n}: frames cold {f['cold_ms']} ms ({f['cold_MBps']} MB/s), warm {f['warm_ms']} ms "
            f"({f['warm_MBps']} MB/s, {f['warm_frames_per_s']} frames/s); "
            f"JPEG {targets[n]['jpeg_bytes']} bytes; loaded in {targets[n]['load_seconds']} s"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
