"""DICOMweb benchmark: WADO-RS series metadata and QIDO-RS study search, NoctisPro vs Orthanc.

    .venv/bin/python bench/dicomweb/run.py [--series-size 500] [--studies 2000]
        [--repeat 30] [--targets noctispro,orthanc] [--keep]

Both targets start fresh on free loopback ports and receive the same files by DCMTK
storescu: one series of `--series-size` CT instances (512 x 512, 16-bit) and `--studies`
one-instance studies with varied names, IDs and dates. NoctisPro runs as `noctispro
serve` (its worker makes the kept metadata before the clock starts: the run waits for
it); Orthanc is Debian's with its DICOMweb plugin (`orthanc-dicomweb`), SQLite index,
`StudiesMetadata`/`SeriesMetadata` "Full" (the whole data set, as we serve it).
Each request is timed over HTTP keep-alive; the first is reported apart from the
p50/p95 of the next `--repeat`. Results go to bench/results/dicomweb-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.factories import make_ct, write  # noqa: E402

from bench.common import (  # noqa: E402
    LOOPBACK,
    BenchError,
    Child,
    TargetUnavailable,
    dcmtk_env,
    free_port,
    machine_facts,
    require_tool,
    wait_for_echo,
    wait_for_http,
)

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
NAMES = ["DOE", "SMITH", "MÜLLER", "GARCIA", "NGUYEN", "KOWALSKI", "TANAKA", "OKAFOR"]
QUERIES = {
    "all, limit 100": {"limit": "100"},
    "PatientName=SMITH*": {"PatientName": "SMITH*", "limit": "100"},
    "StudyDate range": {"StudyDate": "20200101-20201231", "limit": "100"},
    "PatientID exact": {"PatientID": "BENCH-00042"},
    "ModalitiesInStudy=CT, limit 25": {"ModalitiesInStudy": "CT", "limit": "25"},
}


def generate(root: Path, series_size: int, studies: int) -> tuple[str, str]:
    """Write the files; return the big series' (study, series) UIDs."""
    study, series = generate_uid(), generate_uid()
    for n in range(series_size):
        ds = make_ct(
            study_uid=study,
            series_uid=series,
            instance_number=n + 1,
            rows=512,
            columns=512,
            seed=n,
            patient_id="BENCH-SERIES",
        )
        write(ds, root / "series" / f"{n:05d}.dcm")
    for n in range(studies):
        ds = make_ct(
            patient_id=f"BENCH-{n:05d}",
            patient_name=f"{NAMES[n % len(NAMES)]}^P{n}",
            study_date=f"{2015 + n % 10}{1 + n % 12:02d}{1 + n % 28:02d}",
            accession=f"A{n:06d}",
            rows=4,
            columns=4,
            description=f"Study {n}",
        )
        write(ds, root / "studies" / f"{n // 1000:03d}" / f"{n:05d}.dcm")
    return study, series


def storescu(port: int, aet: str, folder: Path) -> float:
    started = time.perf_counter()
    res = subprocess.run(
        [require_tool("storescu"), "-aec", aet, "+sd", "+r", LOOPBACK, str(port), str(folder)],
        env=dcmtk_env(nodelay=True),
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise BenchError(f"storescu into {aet} failed: {res.stderr[-2000:]}")
    return time.perf_counter() - started


class NoctisPro:
    name = "noctispro"
    aet = "NOCTISPRO"

    def start(self, workdir: Path) -> None:
        self.data = workdir / "data"
        self.password = secrets.token_urlsafe(16)
        self.ports = {k: free_port() for k in ("web", "api", "dicom")}
        env = {
            k: v
            for k, v in dcmtk_env().items()
            if not k.startswith("NOCTISPRO_") and k != "DATABASE_URL"
        }
        env.update(
            NOCTISPRO_DATA_DIR=str(self.data),
            NOCTISPRO_BIND=LOOPBACK,
            NOCTISPRO_WEB_PORT=str(self.ports["web"]),
            NOCTISPRO_API_PORT=str(self.ports["api"]),
            NOCTISPRO_DICOM_PORT=str(self.ports["dicom"]),
            NOCTISPRO_ADMIN_PASSWORD=self.password,
            NOCTISPRO_WORKER_HEARTBEAT_SECONDS="1",
        )
        command = str(Path(sys.executable).with_name("noctispro"))
        res = subprocess.run([command, "migrate"], env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise TargetUnavailable(f"noctispro migrate failed: {res.stderr[-1000:]}")
        self.child = Child(self.name, [command, "serve"], env=env, log_path=workdir / "serve.log")
        wait_for_echo(self.child, self.aet, self.ports["dicom"], env=env)
        self.base = f"http://{LOOPBACK}:{self.ports['api']}"
        wait_for_http(self.child, f"{self.base}/api/v1/ping")

    @property
    def dicom_port(self) -> int:
        return self.ports["dicom"]

    def client(self) -> httpx.Client:
        r = httpx.post(
            f"{self.base}/api/v1/auth/token",
            data={"username": "admin", "password": self.password},
        )
        r.raise_for_status()
        token = r.json()["access_token"]
        return httpx.Client(
            base_url=f"{self.base}/dicom-web",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )

    def ready(self, instances: int) -> None:
        """Wait until the worker has kept the metadata of every instance."""
        deadline = time.monotonic() + 600
        db = self.data / "noctispro.sqlite3"
        while time.monotonic() < deadline:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                (kept,) = con.execute("SELECT COUNT(*) FROM index_instancemetadata").fetchone()
            if kept >= instances:
                return
            time.sleep(1)
        raise BenchError(f"NoctisPro kept metadata of {kept} of {instances} instances")

    def stop(self) -> None:
        self.child.stop()


class Orthanc:
    name = "orthanc"
    aet = "ORTHANC"

    def start(self, workdir: Path) -> None:
        if not Path(ORTHANC).exists() or not Path(ORTHANC_DICOMWEB).exists():
            raise TargetUnavailable("apt-get install orthanc orthanc-dicomweb")
        for sub in ("storage", "index", "tmp"):
            (workdir / sub).mkdir(parents=True)
        self.dicom_port, http_port = free_port(), free_port()
        config = {
            "Name": "noctispro-bench",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "TemporaryDirectory": str(workdir / "tmp"),
            "Plugins": [ORTHANC_DICOMWEB],
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomCheckModalityHost": False,
            "DicomThreadsCount": 4,
            "HttpCompressionEnabled": False,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }
        cfg = workdir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        self.child = Child(
            self.name, [ORTHANC, str(cfg)], env=dcmtk_env(), log_path=workdir / "orthanc.log"
        )
        self.base = f"http://{LOOPBACK}:{http_port}"
        wait_for_http(self.child, f"{self.base}/system")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.base}/dicom-web", timeout=120)

    def ready(self, instances: int) -> None:
        return None

    def stop(self) -> None:
        self.child.stop()


def timed(fn: Callable[[], httpx.Response], repeat: int) -> dict[str, float | int]:
    def once() -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        r = fn()
        r.read()
        return (time.perf_counter() - started) * 1000, r

    first, r = once()
    if r.status_code not in (200, 204):
        raise BenchError(f"{r.request.url}: HTTP {r.status_code} {r.text[:300]}")
    times = sorted(once()[0] for _ in range(repeat))
    return {
        "first_ms": round(first, 2),
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
        "bytes": len(r.content),
        "results": len(r.json()) if r.status_code == 200 else 0,
    }


def run_target(target, data: Path, uids: tuple[str, str], args, workdir: Path) -> dict:
    target.start(workdir)
    try:
        load_s = storescu(target.dicom_port, target.aet, data)
        target.ready(args.series_size + args.studies)
        study, series = uids
        out: dict[str, object] = {"load_seconds": round(load_s, 1)}
        with target.client() as client:
            metadata = timed(
                lambda: client.get(
                    f"/studies/{study}/series/{series}/metadata",
                    headers={"Accept": "application/dicom+json"},
                ),
                args.repeat,
            )
            if metadata["results"] != args.series_size:
                raise BenchError(f"{target.name}: {metadata['results']} metadata items")
            out["series_metadata"] = metadata
            out["qido"] = {
                label: timed(
                    lambda params=params: client.get(
                        "/studies", params=params, headers={"Accept": "application/dicom+json"}
                    ),
                    args.repeat,
                )
                for label, params in QUERIES.items()
            }
        return out
    finally:
        target.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series-size", type=int, default=500)
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--targets", default="noctispro,orthanc")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    results: dict[str, object] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(workdir),
        "series_size": args.series_size,
        "studies": args.studies,
        "repeat": args.repeat,
        "targets": {},
    }
    try:
        print(f"generating {args.series_size} + {args.studies} instances in {workdir}")
        uids = generate(workdir / "data", args.series_size, args.studies)
        results["targets"] = run_targets(run_target, uids, args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    save_results("dicomweb", results)
    return 0


def run_targets(run: Callable[..., dict], uids: Any, args: Any, workdir: Path) -> dict:
    """`run(target, data dir, uids, args, target's workdir)` for each of `--targets`,
    NoctisPro (`serve`) and Orthanc with its DICOMweb plugin; one that cannot start is
    skipped. Shared with bench/rendered."""
    classes = {"noctispro": NoctisPro, "orthanc": Orthanc}
    done: dict[str, dict] = {}
    for name in args.targets.split(","):
        print(f"running {name} ...", flush=True)
        try:
            done[name] = run(classes[name](), workdir / "data", uids, args, workdir / name)
        except TargetUnavailable as exc:
            print(f"  SKIPPED: {exc}")
    return done


def save_results(kind: str, results: dict) -> None:
    out = REPO_ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"{kind}-{stamp}.json").write_text(json.dumps(results, indent=2))


def report(results: dict) -> None:
    targets = results["targets"]
    rows = [("series metadata", lambda t: t["series_metadata"])]
    rows += [(f"QIDO {label}", lambda t, label=label: t["qido"][label]) for label in QUERIES]
    names = list(targets)
    print()
    header = f"{'request':36}" + "".join(f"{n + ' first/p50/p95 ms':>34}" for n in names)
    if {"noctispro", "orthanc"} <= set(names):
        header += f"{'p50 ratio':>11}"
    print(header)
    for label, pick in rows:
        line = f"{label:36}"
        for n in names:
            m = pick(targets[n])
            line += f"{m['first_ms']:>14.1f}{m['p50_ms']:>10.1f}{m['p95_ms']:>10.1f}"
        if {"noctispro", "orthanc"} <= set(names):
            ratio = pick(targets["orthanc"])["p50_ms"] / pick(targets["noctispro"])["p50_ms"]
            line += f"{ratio:>10.1f}x"
        print(line)
    for n in names:
        print(f"{n}: loaded in {targets[n]['load_seconds']} s")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
