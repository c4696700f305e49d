"""C-FIND benchmark: study, patient and series queries on a large synthetic index.

    .venv/bin/python bench/cfind/run.py [--instances 1000000] [--studies 20000]
        [--backends sqlite,postgresql] [--repeat 30] [--orthanc-cache DIR]

1. For each backend, a fresh NoctisPro database (SQLite file, or a PostgreSQL database
   this script creates and drops) is migrated and filled in bulk with the synthetic
   index of `bench/cfind/synth.py` (rows exactly as ingest leaves them); the fill is timed.
2. The real `noctispro dicom` SCP is started on it and every query of `QUERIES` is sent
   over real associations by a pynetdicom SCU (TCP_NODELAY on): `--repeat` times on one
   reused association (after one untimed warm-up), and `--cold` times on a new
   association each (associate + C-FIND + release). Latency = C-FIND-RQ sent to the
   final response received, all pending responses read.
3. Unless `--no-orthanc`: the same queries against Orthanc (Debian's /usr/sbin/Orthanc)
   holding `--orthanc-instances` generated instances, and against NoctisPro holding the
   same instances. Orthanc's database is kept in `--orthanc-cache` so reruns skip the fill.

Prints Markdown tables (p50 / p95 / max per query, match counts) and writes a JSON file.
See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE, _config, evt  # noqa: E402
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # noqa: E402
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from bench.cfind import synth  # noqa: E402
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
from bench.ingest.targets import default_noctispro_command  # noqa: E402

CALLING_AET = "BENCHSCU"
# The SCU should cost as little as it can: pynetdicom's standard handlers format a debug
# line for every PDU and DIMSE message even when nothing is logged (about 1 ms per
# C-FIND response here), and would log every identifier.
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
PENDING = (0xFF00, 0xFF01)
STUDY_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
PATIENT_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "NumberOfPatientRelatedStudies",
)
SERIES_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
)
MONTH = "20230301-20230331"
YEAR = "20220101-20221231"


@dataclass(frozen=True)
class FindQuery:
    name: str
    level: str
    filters: dict[str, str]
    model: str = "study"  # information model: study root or patient root

    def identifier(self) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level
        keys = {"STUDY": STUDY_KEYS, "PATIENT": PATIENT_KEYS, "SERIES": SERIES_KEYS}[self.level]
        for keyword in keys:
            setattr(ds, keyword, "")
        for keyword, value in self.filters.items():
            setattr(ds, keyword, value)
        if any(not v.isascii() for v in self.filters.values()):
            ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.filters.items())


def queries(plan: synth.Plan) -> list[FindQuery]:
    """The benchmark's queries; the patient and study keys are taken from the plan."""
    visible = [s for s in plan.studies if s.patient.facility == 0]
    study = next(s for s in visible[len(visible) // 2 :] if len(s.series) >= 4)
    follow_up = max((s.patient for s in visible), key=lambda p: p.studies)
    return [
        FindQuery("name prefix", "STUDY", {"PatientName": "SMI*"}),
        FindQuery("name contains", "STUDY", {"PatientName": "*ANN*"}),
        FindQuery("name non-ASCII", "STUDY", {"PatientName": "müll*"}),
        FindQuery("date 1 month", "STUDY", {"StudyDate": MONTH}),
        FindQuery("date 1 year", "STUDY", {"StudyDate": YEAR}),
        FindQuery("modality MR", "STUDY", {"ModalitiesInStudy": "MR"}),
        FindQuery("name + 1 year", "STUDY", {"PatientName": "SMI*", "StudyDate": YEAR}),
        FindQuery("MR + 1 month", "STUDY", {"ModalitiesInStudy": "MR", "StudyDate": MONTH}),
        FindQuery("contains + CT", "STUDY", {"PatientName": "*ANN*", "ModalitiesInStudy": "CT"}),
        FindQuery("PatientID", "STUDY", {"PatientID": follow_up.patient_id}),
        FindQuery("patients SMI*", "PATIENT", {"PatientName": "SMI*"}, model="patient"),
        FindQuery("series of a study", "SERIES", {"StudyInstanceUID": study.uid}),
    ]


# --- the SCU -----------------------------------------------------------------------------


def _nodelay(event: evt.Event) -> None:
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _scu() -> AE:
    ae = AE(ae_title=CALLING_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.maximum_pdu_size = 131_072
    return ae


def _associate(ae: AE, aet: str, port: int):
    assoc = ae.associate(LOOPBACK, port, ae_title=aet, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise BenchError(f"{aet} on port {port} refused the association")
    return assoc


def find(assoc, query: FindQuery) -> tuple[float, int]:
    """One C-FIND: (seconds until the final response, number of pending responses).

    A pending response whose identifier pynetdicom could not decode still counts (and
    is reported): the count is what the SCP sent.
    """
    model = (
        PatientRootQueryRetrieveInformationModelFind
        if query.model == "patient"
        else StudyRootQueryRetrieveInformationModelFind
    )
    ds = query.identifier()
    matches = 0
    start = time.perf_counter()
    for status, identifier in assoc.send_c_find(ds, model):
        if not status:
            raise BenchError(f"{query.name}: no response (association aborted or timed out)")
        code = int(status.Status)
        if code in PENDING:
            matches += 1
            if identifier is None:
                print(f"    WARNING {query.name}: a pending response without a readable identifier")
            continue
        if code != 0x0000:
            comment = getattr(status, "ErrorComment", "")
            raise BenchError(f"{query.name}: C-FIND status 0x{code:04X} {comment}")
    return time.perf_counter() - start, matches


@dataclass
class Measured:
    query: str
    level: str
    filters: str
    matches: int
    warm_ms: list[float] = field(default_factory=list)
    cold_ms: list[float] = field(default_factory=list)
    other_counts: list[int] = field(default_factory=list)

    def stats(self) -> dict[str, float | None]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

        return {
            "p50": pct(self.warm_ms, 0.5),
            "p95": pct(self.warm_ms, 0.95),
            "max": max(self.warm_ms) if self.warm_ms else None,
            "cold_p50": pct(self.cold_ms, 0.5),
        }


def measure(aet: str, port: int, plan_queries: list[FindQuery], repeat: int, cold: int) -> list:
    ae = _scu()
    results = []
    assoc = _associate(ae, aet, port)
    try:
        for q in plan_queries:
            _, matches = find(assoc, q)  # warm-up, untimed
            m = Measured(q.name, q.level, q.describe(), matches)
            for _ in range(repeat):
                seconds, n = find(assoc, q)
                if n != matches:  # reported, not hidden: the table flags the row
                    print(f"    WARNING {q.name}: {n} matches, first run {matches}", flush=True)
                    m.other_counts.append(n)
                m.warm_ms.append(seconds * 1000)
            results.append(m)
            print(
                f"    {q.name:<20} {matches:>6} matches  p50 {m.stats()['p50']:8.1f} ms", flush=True
            )
    finally:
        assoc.release()
    for q, m in zip(plan_queries, results, strict=True):
        for _ in range(cold):
            start = time.perf_counter()
            fresh = _associate(ae, aet, port)
            try:
                find(fresh, q)
            finally:
                fresh.release()
            m.cold_ms.append((time.perf_counter() - start) * 1000)
    return results


# --- NoctisPro -------------------------------------------------------------------------


def _pg_admin(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path="/postgres").geturl()


class NoctisProIndex:
    """A NoctisPro data dir (and PostgreSQL database) filled from a plan, and its SCP."""

    aet = "NOCTISPRO"

    def __init__(self, backend: str, workdir: Path, command: str, pg_url: str) -> None:
        self.backend = backend
        self.workdir = workdir
        self.command = command
        self.pg_url = pg_url
        self.database_url = ""
        self.child: Child | None = None
        self.port = 0
        self.fill: dict[str, object] = {}

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in dcmtk_env().items()
            if not k.startswith("NOCTISPRO_") and k != "DATABASE_URL"
        }
        env.update(
            NOCTISPRO_DATA_DIR=str(self.workdir / "data"),
            NOCTISPRO_DICOM_PORT=str(self.port),
            NOCTISPRO_BIND=LOOPBACK,
            NOCTISPRO_AE_TITLE=self.aet,
            NOCTISPRO_ADMIN_PASSWORD=secrets.token_urlsafe(16),
            PYTHONPATH=str(REPO_ROOT),
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        return env

    def create(self, plan_args: dict[str, int]) -> None:
        import psycopg

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.backend == "postgresql":
            name = f"noctispro_cfind_{secrets.token_hex(4)}"
            try:
                with psycopg.connect(_pg_admin(self.pg_url), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.Error as exc:
                raise TargetUnavailable(f"PostgreSQL at {self.pg_url}: {exc}") from exc
            self.database_url = urlsplit(self.pg_url)._replace(path=f"/{name}").geturl()
        self._run([self.command, "migrate"], "migrate.log")
        argv = [sys.executable, "-m", "bench.cfind.synth"]
        for key, value in plan_args.items():
            argv += [f"--{key}", str(value)]
        start = time.perf_counter()
        out = self._run(argv, "fill.log")
        self.fill = json.loads(out.strip().splitlines()[-1]) | {
            "total_seconds": round(time.perf_counter() - start, 1)
        }
        if self.backend == "sqlite":
            self.fill["database_bytes"] = (
                (self.workdir / "data" / "noctispro.sqlite3").stat().st_size
            )
        else:
            with psycopg.connect(self.database_url) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                self.fill["database_bytes"] = int(row[0]) if row else 0

    def _run(self, argv: list[str], log: str) -> str:
        res = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, check=False, cwd=REPO_ROOT
        )
        (self.workdir / log).write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            tail = (res.stdout + res.stderr).strip().splitlines()[-5:]
            raise BenchError(f"{argv[1:3]} failed: {' | '.join(tail)}")
        return res.stdout

    def start(self) -> None:
        self.port = free_port()
        self.child = Child(
            f"noctispro-{self.backend}",
            [self.command, "dicom"],
            env=self.env(),
            log_path=self.workdir / "dicom.log",
        )
        wait_for_echo(self.child, self.aet, self.port, env=dcmtk_env())

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def drop(self) -> None:
        if self.database_url:
            import psycopg

            name = urlsplit(self.database_url).path.lstrip("/")
            with psycopg.connect(_pg_admin(self.pg_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.database_url = ""


# --- Orthanc ---------------------------------------------------------------------------


class OrthancIndex:
    """Orthanc with its SQLite index and storage in a cache dir kept between runs."""

    aet = "ORTHANC"
    binary = "/usr/sbin/Orthanc"

    def __init__(self, cache: Path, workdir: Path) -> None:
        self.cache = cache
        self.workdir = workdir
        self.child: Child | None = None
        self.port = 0
        self.http_port = 0

    def config(self) -> dict[str, object]:
        return {
            "Name": "noctispro-bench-cfind",
            "StorageDirectory": str(self.cache / "storage"),
            "IndexDirectory": str(self.cache / "index"),
            "TemporaryDirectory": str(self.workdir / "orthanc-tmp"),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            # The bench SCU may query (C-FIND is refused to unknown AEs).
            "DicomModalities": {"bench": [CALLING_AET, LOOPBACK, 104]},
            "DicomThreadsCount": 4,
            "MaximumPduLength": 131_072,
            "SaveJobs": False,
            "HttpCompressionEnabled": False,
            "DeidentifyLogs": True,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }

    def start(self) -> None:
        if not Path(self.binary).exists():
            raise TargetUnavailable(f"{self.binary} not found (apt-get install orthanc)")
        for sub in ("storage", "index"):
            (self.cache / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "orthanc-tmp").mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = free_port(), free_port()
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        self.child = Child(
            "orthanc",
            [self.binary, str(cfg)],
            env=dcmtk_env(),
            log_path=self.workdir / "orthanc.log",
            cwd=self.workdir,
        )
        wait_for_http(self.child, f"http://{LOOPBACK}:{self.http_port}/system", timeout=300)
        wait_for_echo(self.child, self.aet, self.port, env=dcmtk_env())

    def statistics(self) -> dict[str, object]:
        url = f"http://{LOOPBACK}:{self.http_port}/statistics"
        with urllib.request.urlopen(url, timeout=60) as resp:
            return dict(json.load(resp))

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=60)
            self.child = None

    def fill_storescu(self, paths: list[Path], associations: int) -> None:
        """DCMTK storescu processes, each scanning its share of the study folders."""
        storescu = require_tool("storescu")
        folders = sorted({p.parent for p in paths})
        procs = []
        for i in range(associations):
            log = (self.workdir / f"storescu-{i}.log").open("wb")
            argv = [storescu, "-nh", "+sd", "-aet", CALLING_AET, "-aec", self.aet]
            argv += ["-pdu", "131072", LOOPBACK, str(self.port)]
            argv += [str(f) for f in folders[i::associations]]
            procs.append((subprocess.Popen(argv, env=dcmtk_env(), stdout=log, stderr=log), log))
        failed = []
        for i, (proc, log) in enumerate(procs):
            if proc.wait() != 0:
                failed.append(i)
            log.close()
        if failed:
            raise BenchError(f"storescu into Orthanc failed (see {self.workdir}/storescu-*.log)")

    def fill_rest(self, paths: list[Path], threads: int) -> None:
        url = f"http://{LOOPBACK}:{self.http_port}/instances"

        def post(path: Path) -> None:
            req = urllib.request.Request(url, data=path.read_bytes(), method="POST")
            req.add_header("Content-Type", "application/dicom")
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(post, paths))


def orthanc_ready(args: argparse.Namespace, plan: synth.Plan, workdir: Path) -> OrthancIndex:
    """Orthanc holding the plan's instances: from the cache, or filled now (and timed)."""
    cache = args.orthanc_cache or (workdir / "orthanc-cache")
    marker = cache / "noctispro-bench.json"
    want = {
        "instances": plan.instances,
        "studies": len(plan.studies),
        "seed": plan.seed,
        "synth": synth.VERSION,
    }
    orthanc = OrthancIndex(cache, workdir)
    if marker.exists() and json.loads(marker.read_text()).get("plan") == want:
        orthanc.start()
        stats = orthanc.statistics()
        if int(str(stats["CountInstances"])) == plan.instances:
            print(f"  Orthanc: {plan.instances} instances from the cache {cache}", flush=True)
            return orthanc
        orthanc.stop()
    shutil.rmtree(cache / "storage", ignore_errors=True)
    shutil.rmtree(cache / "index", ignore_errors=True)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    paths = synth.write_files(plan, workdir / "files")
    generated = time.perf_counter() - t0
    print(f"  wrote {len(paths)} files in {generated:.1f} s", flush=True)
    orthanc.start()
    t0 = time.perf_counter()
    if args.orthanc_fill == "rest":
        orthanc.fill_rest(paths, args.orthanc_fill_parallel)
    else:
        orthanc.fill_storescu(paths, args.orthanc_fill_parallel)
    seconds = time.perf_counter() - t0
    stats = orthanc.statistics()
    if int(str(stats["CountInstances"])) != plan.instances:
        raise BenchError(f"Orthanc holds {stats['CountInstances']} of {plan.instances} instances")
    fill = {
        "method": args.orthanc_fill,
        "parallel": args.orthanc_fill_parallel,
        "seconds": round(seconds, 1),
        "instances_per_s": round(plan.instances / seconds, 1),
    }
    print(f"  filled Orthanc: {fill}", flush=True)
    marker.write_text(json.dumps({"plan": want, "fill": fill}, indent=2) + "\n")
    shutil.rmtree(workdir / "files", ignore_errors=True)
    return orthanc


# --- report ----------------------------------------------------------------------------


def table(title: str, rows: list[Measured]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"#### {title}",
        "",
        "| query | level | keys | matches | p50 ms | p95 ms | max ms | new assoc p50 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        s = m.stats()
        keys = m.filters if len(m.filters) < 60 else m.filters[:57] + "..."
        matches = f"{m.matches}" + (
            f" (also {sorted(set(m.other_counts))})" if m.other_counts else ""
        )
        lines.append(
            f"| {m.query} | {m.level} | `{keys}` | {matches} | {ms(s['p50'])} | "
            f"{ms(s['p95'])} | {ms(s['max'])} | {ms(s['cold_p50'])} |"
        )
    return "\n".join(lines)


def run_noctispro(
    args: argparse.Namespace, backend: str, plan: synth.Plan, workdir: Path, label: str
) -> tuple[dict[str, object], list[Measured]]:
    target = NoctisProIndex(
        backend, workdir / f"noctispro-{backend}-{label}", args.command, args.pg_url
    )
    try:
        target.create(
            {
                "instances": plan.instances,
                "studies": len(plan.studies),
                "patients": len(plan.patients),
                "seed": plan.seed,
            }
        )
        print(f"  NoctisPro/{backend} {label}: filled {target.fill}", flush=True)
        target.start()
        results = measure(target.aet, target.port, queries(plan), args.repeat, args.cold)
    finally:
        target.stop()
        if not args.keep:
            target.drop()
    return target.fill, results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1_000_000)
    p.add_argument("--studies", type=int, default=20_000)
    p.add_argument("--patients", type=int, default=None, help="[3/8 of the studies]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per query [30]")
    p.add_argument("--cold", type=int, default=5, help="runs on a new association [5]")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create the benchmark database on",
    )
    p.add_argument("--no-orthanc", action="store_true")
    p.add_argument("--orthanc-instances", type=int, default=50_000)
    p.add_argument("--orthanc-studies", type=int, default=1_000)
    p.add_argument("--orthanc-cache", type=Path, default=None, help="keep Orthanc's DB here")
    p.add_argument("--orthanc-fill", choices=("storescu", "rest"), default="storescu")
    p.add_argument("--orthanc-fill-parallel", type=int, default=4)
    p.add_argument("--skip-large", action="store_true", help="only the Orthanc comparison")
    p.add_argument("--command", default=default_noctispro_command(), help="noctispro script")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep data dirs and PostgreSQL DBs")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(args.backends) - {"sqlite", "postgresql"}:
        p.error("--backends: sqlite and/or postgresql")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="noctispro-bench-cfind-", dir=args.workdir))
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts(workdir)
    print("NoctisPro C-FIND benchmark", started.strftime("%Y-%m-%d %H:%M:%SZ"))
    for key, value in facts.items():
        print(f"  {key:<14} {value}")
    load = os.getloadavg()
    print(f"  loadavg        {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    report: dict[str, object] = {"benchmark": "cfind", "started": started.isoformat()}
    report |= {"machine": facts, "loadavg_start": load, "config": vars(args) | {}}
    tables: list[str] = []
    runs: list[dict[str, object]] = []
    try:
        if not args.skip_large:
            plan = synth.make_plan(args.instances, args.studies, args.patients, args.seed)
            for backend in args.backends:
                fill, results = run_noctispro(args, backend, plan, workdir, "large")
                title = (
                    f"NoctisPro, {backend}, {plan.instances:,} instances / "
                    f"{len(plan.studies):,} studies"
                )
                tables.append(table(title, results))
                runs.append(
                    {
                        "target": f"noctispro-{backend}",
                        "index": "large",
                        "fill": fill,
                        "results": [asdict(r) | r.stats() for r in results],
                    }
                )
        if not args.no_orthanc:
            small = synth.make_plan(args.orthanc_instances, args.orthanc_studies, None, args.seed)
            size = f"{small.instances:,} instances / {len(small.studies):,} studies"
            orthanc = orthanc_ready(args, small, workdir)
            try:
                print("  Orthanc queries", flush=True)
                results = measure(orthanc.aet, orthanc.port, queries(small), args.repeat, args.cold)
            finally:
                orthanc.stop()
            tables.append(table(f"Orthanc 1.10 (SQLite), {size}", results))
            marker = json.loads((orthanc.cache / "noctispro-bench.json").read_text())
            runs.append(
                {
                    "target": "orthanc",
                    "index": "small",
                    "fill": marker["fill"],
                    "results": [asdict(r) | r.stats() for r in results],
                }
            )
            for backend in args.backends:
                fill, results = run_noctispro(args, backend, small, workdir, "small")
                tables.append(table(f"NoctisPro, {backend}, {size}", results))
                runs.append(
                    {
                        "target": f"noctispro-{backend}",
                        "index": "small",
                        "fill": fill,
                        "results": [asdict(r) | r.stats() for r in results],
                    }
                )
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nloadavg at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("\n\n".join(tables))
    report |= {"loadavg_end": load, "runs": runs}
    out = args.json or (REPO_ROOT / "bench" / "results" / f"cfind-{started:%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
