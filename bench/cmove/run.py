"""C-MOVE benchmark: one 500-instance CT study moved to DCMTK storescp, NoctisPro vs Orthanc.

    /work/venv/bin/python bench/cmove/run.py [--count 500] [--repeat 3]
        [--targets noctispro,orthanc] [--keep]

Both archives start fresh on free loopback ports and are loaded with the same study by
storescu (not timed). Then, per repeat, DCMTK movescu asks the archive to move the
study (Study Root, STUDY level) to one DCMTK storescp, and the clock runs from
starting movescu to its exit; the storescp folder must then hold every instance.
Prints the median seconds and images/s and the ratio, and writes a JSON file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import LOOPBACK, BenchError, dcmtk_env, machine_facts, require_tool  # noqa: E402
from bench.ingest.dataset import InstanceSet, generate  # noqa: E402
from bench.ingest.targets import (  # noqa: E402
    NoctisPro,
    Orthanc,
    Storescp,
    Target,
    default_noctispro_command,
)

PDU = 131_072
MOVER = "BENCHMOVE"
LOADER = "BENCHLOAD"


class OrthancWithDestination(Orthanc):
    """Orthanc that knows the mover (it may C-MOVE) and the storescp destination."""

    destination: tuple[str, int] = ("STORESCP", 0)

    def config(self, workdir: Path) -> dict[str, object]:
        cfg = super().config(workdir)
        cfg["DicomModalities"] = {
            "dest": [self.destination[0], LOOPBACK, self.destination[1]],
            "mover": [MOVER, LOOPBACK, 1],
        }
        return cfg


def load(target: Target, data: InstanceSet) -> None:
    res = subprocess.run(
        [require_tool("storescu"), "-aet", LOADER, "-aec", target.aet, "-pdu", str(PDU),
         LOOPBACK, str(target.port), *data.paths()],
        env=dcmtk_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise BenchError(f"{target.name}: loading failed: {res.stderr[-2000:]}")
    if target.stored().count != data.count:
        raise BenchError(f"{target.name}: holds {target.stored().count} of {data.count}")


def move(target: Target, study_uid: str, dest: Storescp, logdir: Path, n: int) -> float:
    argv = [
        require_tool("movescu"), "-S", "-aet", MOVER, "-aec", target.aet, "-aem", dest.aet,
        "-pdu", str(PDU), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        LOOPBACK, str(target.port),
    ]  # fmt: skip
    started = time.perf_counter()
    res = subprocess.run(argv, env=dcmtk_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    (logdir / f"movescu-{target.name}-{n}.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise BenchError(f"{target.name}: movescu failed: {res.stderr[-2000:]}")
    return seconds


def run_target(
    name: str, data: InstanceSet, study_uid: str, args: argparse.Namespace, work: Path
) -> dict:
    dest = Storescp(pdu=PDU, nodelay=True)
    dest.start(work / f"{name}-dest", 1)
    target: Target
    if name == "noctispro":
        target = NoctisPro(
            pdu=PDU, nodelay=True, processes=None, command=default_noctispro_command()
        )
    else:
        target = OrthancWithDestination(pdu=PDU, nodelay=True)
        target.destination = (dest.aet, dest.port)
    try:
        target.start(work / name, 1)
        if isinstance(target, NoctisPro):
            env = target._env(target.data_dir)
            for node in (
                ["dest", "--aet", dest.aet, "--port", str(dest.port)],
                ["mover", "--aet", MOVER, "--port", "1", "--allow", "move"],
            ):
                subprocess.run(
                    [target.command, "nodes", "add", node[0], "--host", LOOPBACK, *node[1:]],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
        load(target, data)
        seconds = []
        for n in range(args.repeat):
            shutil.rmtree(dest.out)
            dest.out.mkdir()
            seconds.append(move(target, study_uid, dest, work, n))
            got = dest.stored()
            if got.sop_uids != data.sop_uids:
                raise BenchError(f"{name}: storescp received {got.count} of {data.count}")
        return {"target": name, "seconds": seconds, "median_seconds": statistics.median(seconds)}
    finally:
        target.stop()
        dest.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="noctispro,orthanc")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench" / "results" / "cmove.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="noctispro-cmove-"))
    try:
        data = generate(work / "data", args.count)
        import pydicom

        study_uids = {
            pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in data.paths()
        }
        if len(study_uids) != 1:
            raise BenchError(f"--count {args.count} makes {len(study_uids)} studies; use <= 500")
        study_uid = study_uids.pop()
        mb = data.total_bytes / 1e6
        print(f"{data.count} instances, {mb:.1f} MB, one study; {args.repeat} repeats")
        results = []
        for name in args.targets.split(","):
            result = run_target(name.strip(), data, study_uid, args, work)
            results.append(result)
            med = result["median_seconds"]
            runs = [round(s, 2) for s in result["seconds"]]
            print(
                f"{name:10s} median {med:6.2f} s  {data.count / med:7.1f} images/s  "
                f"{mb / med:6.1f} MB/s  runs {runs}"
            )
        by = {r["target"]: r["median_seconds"] for r in results}
        if "noctispro" in by and "orthanc" in by:
            print(f"NoctisPro is {by['orthanc'] / by['noctispro']:.2f}x Orthanc (time ratio)")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "count": data.count,
                    "bytes": data.total_bytes,
                    "results": results,
                    "machine": machine_facts(work),
                },
                indent=2,
            )
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
