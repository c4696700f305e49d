"""Ingest benchmark: the same synthetic CT set sent with DCMTK storescu into each target.

    /work/venv/bin/python bench/ingest/run.py [--count 1000] [--parallel 4]
        [--targets noctispro,storescp,orthanc] [--repeat 3] [--keep]

For every target and association count (1, then --parallel): start the target
fresh and empty on free loopback ports, wait for C-ECHO, time storescu sending all
files (split into contiguous groups, one storescu process per association),
verify the target holds every instance, stop it. Prints the median images/s and
MB/s over the repeats (MB = 10**6 bytes of the Part 10 files sent) and ratios vs
Orthanc and storescp, and writes a JSON file. See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import (  # noqa: E402
    LOOPBACK,
    BenchError,
    TargetUnavailable,
    dcmtk_env,
    machine_facts,
    require_tool,
)
from bench.ingest.dataset import InstanceSet, generate  # noqa: E402
from bench.ingest.targets import (  # noqa: E402
    NoctisPro,
    Orthanc,
    Storescp,
    Target,
    default_noctispro_command,
)

TARGET_NAMES = ("noctispro", "storescp", "orthanc")
CALLING_AET = "BENCHSCU"
DEFAULT_PDU = 131_072  # the largest storescu / storescp accept


@dataclass
class Run:
    target: str
    associations: int
    repeat: int
    images: int
    bytes: int
    seconds: float
    mode: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


def send(
    data: InstanceSet, target: Target, associations: int, *, pdu: int, nodelay: bool, logdir: Path
) -> float:
    """Time storescu processes sending `data` over `associations` associations."""
    storescu = require_tool("storescu")
    env = dcmtk_env(nodelay=nodelay)
    groups = data.split(associations)
    logs = [(logdir / f"storescu-{i}.log").open("wb") for i in range(len(groups))]
    try:
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    storescu,
                    "-aet",
                    CALLING_AET,
                    "-aec",
                    target.aet,
                    "-pdu",
                    str(pdu),
                    LOOPBACK,
                    str(target.port),
                    *group,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for group, log in zip(groups, logs, strict=True)
        ]
        codes = [p.wait() for p in procs]
        elapsed = time.perf_counter() - start
    finally:
        for log in logs:
            log.close()
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        tails = "\n".join(
            f"--- storescu-{i} (exit {codes[i]}):\n"
            + "\n".join(
                (logdir / f"storescu-{i}.log").read_text(errors="replace").splitlines()[-10:]
            )
            for i in failed
        )
        raise BenchError(f"{target.name}: storescu failed\n{tails}")
    for i in range(len(groups)):
        errors = [
            line
            for line in (logdir / f"storescu-{i}.log").read_text(errors="replace").splitlines()
            if line.startswith(("E:", "F:"))
        ]
        if errors:
            raise BenchError(f"{target.name}: storescu-{i} reported errors: {errors[:5]}")
    return elapsed


def verify(target: Target, data: InstanceSet) -> None:
    """Fail loudly unless the target holds exactly the instances sent."""
    stored = target.stored()
    problems = []
    if stored.count != data.count:
        problems.append(f"{stored.count} instances indexed, {data.count} sent")
    if stored.files is not None and stored.files != data.count:
        problems.append(f"{stored.files} files in storage, {data.count} sent")
    if stored.sop_uids is not None and stored.sop_uids != data.sop_uids:
        missing = data.sop_uids - stored.sop_uids
        extra = stored.sop_uids - data.sop_uids
        problems.append(f"{len(missing)} SOP Instance UIDs missing, {len(extra)} unexpected")
    if problems:
        raise BenchError(f"{target.name} lost instances: " + "; ".join(problems))


def make_target(name: str, args: argparse.Namespace) -> Target:
    if name == "storescp":
        return Storescp(pdu=args.pdu, nodelay=not args.no_nodelay)
    if name == "orthanc":
        return Orthanc(pdu=args.pdu, nodelay=not args.no_nodelay)
    if name == "noctispro":
        return NoctisPro(
            pdu=args.pdu,
            nodelay=not args.no_nodelay,
            processes=args.processes,
            command=args.noctispro_command,
        )
    raise ValueError(name)


def run_once(
    name: str,
    associations: int,
    rep: int,
    args: argparse.Namespace,
    data: InstanceSet,
    workdir: Path,
) -> Run:
    target = make_target(name, args)
    rundir = workdir / f"{name}-{associations}assoc-{rep}"
    rundir.mkdir(parents=True)
    try:
        target.start(rundir, associations)
        # Start every timed run with no dirty pages left by the generator or an
        # earlier run (storescp does not fsync, so its writes stay dirty).
        os.sync()
        seconds = send(
            data,
            target,
            associations,
            pdu=args.pdu,
            nodelay=not args.no_nodelay,
            logdir=rundir,
        )
        verify(target, data)
    finally:
        target.stop()
    run = Run(
        target=name,
        associations=associations,
        repeat=rep,
        images=data.count,
        bytes=data.total_bytes,
        seconds=seconds,
        mode=target.mode(associations),
    )
    print(
        f"  {name:<10} {associations} assoc  run {rep + 1}/{args.repeat}: "
        f"{run.seconds:7.2f} s  {run.images_per_s:8.1f} images/s  "
        f"{run.mb_per_s:7.1f} MB/s  [{run.mode}]",
        flush=True,
    )
    if not args.keep and not args.keep_stores:
        shutil.rmtree(rundir, ignore_errors=True)
    return run


def run_all(
    args: argparse.Namespace, data: InstanceSet, workdir: Path
) -> tuple[list[Run], dict[str, str]]:
    """Every case, the targets taking turns (repeat by repeat) so that a machine whose
    speed drifts during the run (a shared VM) does not favour the target measured first."""
    runs: list[Run] = []
    skipped: dict[str, str] = {}
    for rep in range(args.repeat):
        for associations in sorted({1, args.parallel}):
            for name in args.targets:
                if name in skipped:
                    continue
                try:
                    runs.append(run_once(name, associations, rep, args, data, workdir))
                except TargetUnavailable as exc:
                    skipped[name] = str(exc)
                    print(f"  {name}: SKIPPED - {exc}", flush=True)
    return runs, skipped


def summarise(runs: list[Run]) -> dict[tuple[str, int], dict[str, float | int | str]]:
    """Median over repeats per (target, associations)."""
    out: dict[tuple[str, int], dict[str, float | int | str]] = {}
    keys = sorted({(r.target, r.associations) for r in runs}, key=lambda k: (k[1], k[0]))
    for key in keys:
        group = [r for r in runs if (r.target, r.associations) == key]
        seconds = statistics.median(r.seconds for r in group)
        out[key] = {
            "target": key[0],
            "associations": key[1],
            "mode": group[0].mode,
            "images": group[0].images,
            "bytes": group[0].bytes,
            "runs": len(group),
            "seconds": seconds,
            "images_per_s": group[0].images / seconds,
            "mb_per_s": group[0].bytes / 1e6 / seconds,
            "images_per_s_min": min(r.images_per_s for r in group),
            "images_per_s_max": max(r.images_per_s for r in group),
        }
    for (_target, assoc), row in out.items():
        for ref in ("orthanc", "storescp"):
            base = out.get((ref, assoc))
            row[f"vs_{ref}"] = (
                float(row["images_per_s"]) / float(base["images_per_s"]) if base else None
            )
    return out


def print_table(summary: dict[tuple[str, int], dict], skipped: dict[str, str]) -> None:
    def ratio(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "-"

    def spread(row: dict) -> str:
        if row["runs"] == 1:
            return "-"
        return f"{row['images_per_s_min']:.0f}-{row['images_per_s_max']:.0f}"

    header = (
        f"{'target':<10} {'assoc':>5} {'images':>7} {'seconds':>8} {'images/s':>9} "
        f"{'MB/s':>7} {'vs orthanc':>10} {'vs storescp':>11} {'images/s range':>15}  mode"
    )
    print(header)
    print("-" * len(header))
    for row in summary.values():
        print(
            f"{row['target']:<10} {row['associations']:>5} {row['images']:>7} "
            f"{row['seconds']:>8.2f} {row['images_per_s']:>9.1f} {row['mb_per_s']:>7.1f} "
            f"{ratio(row['vs_orthanc']):>10} {ratio(row['vs_storescp']):>11} "
            f"{spread(row):>15}  {row['mode']}"
        )
    for name, reason in skipped.items():
        print(f"{name:<10} SKIPPED: {reason.splitlines()[0]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="instances to send [1000]")
    p.add_argument("--parallel", type=int, default=4, help="associations for the parallel run [4]")
    p.add_argument(
        "--targets",
        default=",".join(TARGET_NAMES),
        help=f"comma-separated subset of {','.join(TARGET_NAMES)}",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs per case; median shown [3]")
    p.add_argument(
        "--pdu",
        type=int,
        default=DEFAULT_PDU,
        help=f"max PDU for storescu and every receiver [{DEFAULT_PDU}]",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="pass --processes N to `noctispro dicom` (default: not passed)",
    )
    p.add_argument(
        "--noctispro-command",
        default=default_noctispro_command(),
        help="the noctispro console script [the one beside this python]",
    )
    p.add_argument(
        "--no-nodelay",
        action="store_true",
        help="leave Nagle on in DCMTK tools and Orthanc (TCP_NODELAY=0) to see its cost",
    )
    p.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    p.add_argument("--json", type=Path, default=None, help="results file [bench/results/...]")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, stores, logs)")
    p.add_argument(
        "--delete-between",
        dest="keep_stores",
        action="store_false",
        help="delete each run's store before the next run (default: all at the end; see README)",
    )
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGET_NAMES)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.count < 1 or args.parallel < 1 or args.repeat < 1:
        p.error("--count, --parallel and --repeat must be >= 1")
    if args.parallel > args.count:
        p.error("--parallel cannot exceed --count")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("storescu", "echoscu"):
        require_tool(tool)
    workdir = Path(tempfile.mkdtemp(prefix="noctispro-bench-ingest-", dir=args.workdir))
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts(workdir)
    print("NoctisPro ingest benchmark", started.strftime("%Y-%m-%d %H:%M:%SZ"))
    for key, value in facts.items():
        print(f"  {key:<14} {value}")
    if args.no_nodelay:
        print("  WARNING: TCP_NODELAY=0 - Nagle left on; numbers are not comparable")
    try:
        t0 = time.perf_counter()
        data = generate(workdir / "instances", args.count)
        print(
            f"  generated {data.count} instances, {data.total_bytes / 1e6:.1f} MB, "
            f"in {time.perf_counter() - t0:.1f} s -> {data.root}"
        )
        stores = len(args.targets) * len({1, args.parallel}) * args.repeat
        if args.keep_stores and shutil.disk_usage(workdir).free < 1.2 * stores * data.total_bytes:
            args.keep_stores = False
            print("  not enough free disk to keep every run's store: deleting between runs")
        print(
            f"  storescu -pdu {args.pdu}, TCP_NODELAY={0 if args.no_nodelay else 1}, "
            f"associations: {sorted({1, args.parallel})}, repeats: {args.repeat}, "
            f"stores deleted {'at the end' if args.keep_stores else 'after each run'}\n",
            flush=True,
        )
        runs, skipped = run_all(args, data, workdir)
        summary = summarise(runs)
        print()
        print_table(summary, skipped)

        out = args.json or (
            REPO_ROOT / "bench" / "results" / f"ingest-{started:%Y%m%dT%H%M%SZ}.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "benchmark": "ingest",
                    "started": started.isoformat(),
                    "machine": facts,
                    "config": {
                        "count": data.count,
                        "bytes": data.total_bytes,
                        "image": "512x512 16-bit signed CT, Explicit VR Little Endian",
                        "parallel": args.parallel,
                        "repeat": args.repeat,
                        "pdu": args.pdu,
                        "tcp_nodelay": not args.no_nodelay,
                        "targets": args.targets,
                        "noctispro_processes": args.processes,
                    },
                    "summary": list(summary.values()),
                    "runs": [
                        asdict(r) | {"images_per_s": r.images_per_s, "mb_per_s": r.mb_per_s}
                        for r in runs
                    ],
                    "skipped": skipped,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nresults: {out}")
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
