"""The C-STORE receivers under test: each starts fresh, on free loopback ports, empty.

A target is started once per timed run (so no run is cheap because of duplicates),
answers C-ECHO before the clock starts, and afterwards reports exactly which
instances it really has; the runner compares that with what was sent.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    LOOPBACK,
    BenchError,
    Child,
    TargetUnavailable,
    dcmtk_env,
    free_port,
    require_tool,
    wait_for_echo,
    wait_for_http,
)


@dataclass
class Stored:
    """What a target holds after a run; `sop_uids` is None where only a count is known."""

    count: int
    sop_uids: frozenset[str] | None = None
    files: int | None = None
    detail: dict[str, object] = field(default_factory=dict)


class Target(ABC):
    name: str
    aet: str

    def __init__(self, *, pdu: int, nodelay: bool) -> None:
        self.pdu = pdu
        self.nodelay = nodelay
        self.port = 0
        self.workdir: Path | None = None
        self.child: Child | None = None

    @abstractmethod
    def start(self, workdir: Path, associations: int) -> None:
        """Start empty in `workdir`; return once it answers C-ECHO on self.port."""

    @abstractmethod
    def stored(self) -> Stored:
        """What the target really holds now."""

    def mode(self, associations: int) -> str:
        """How the target was run, for the report."""
        return ""

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def _wait_echo(self) -> None:
        assert self.child is not None
        wait_for_echo(self.child, self.aet, self.port, env=dcmtk_env(nodelay=self.nodelay))


class Storescp(Target):
    """DCMTK storescp: receives and writes files, nothing else — the ceiling.

    One association: the default single-process mode. Several: `--fork`, because
    single-process storescp serves one association at a time and would queue the rest.
    """

    name = "storescp"
    aet = "STORESCP"

    def mode(self, associations: int) -> str:
        return "--fork" if associations > 1 else "single-process"

    def start(self, workdir: Path, associations: int) -> None:
        self.workdir = workdir
        self.out = workdir / "received"
        self.out.mkdir(parents=True)
        self.port = free_port()
        argv = [
            require_tool("storescp"),
            "--output-directory",
            str(self.out),
            "-aet",
            self.aet,
            "-pdu",
            str(self.pdu),
            "--disable-host-lookup",
            *(["--fork"] if associations > 1 else ["--single-process"]),
            str(self.port),
        ]
        self.child = Child(
            self.name, argv, env=dcmtk_env(nodelay=self.nodelay), log_path=workdir / "storescp.log"
        )
        self._wait_echo()

    def stored(self) -> Stored:
        # Default file names are "<modality>.<SOP Instance UID>", e.g. "CT.1.2.3...".
        names = [p.name for p in self.out.iterdir() if p.is_file()]
        uids = frozenset(n.split(".", 1)[1] for n in names if "." in n)
        return Stored(count=len(names), sop_uids=uids, files=len(names))


class Orthanc(Target):
    """Orthanc from Debian's package, run from our own config on our own ports.

    SQLite index and plain files in a temp dir, no plugins, Debian defaults kept
    otherwise (notably SyncStorageArea: fsync per file, like NoctisPro).
    """

    name = "orthanc"
    aet = "ORTHANC"
    binary = "/usr/sbin/Orthanc"

    def mode(self, associations: int) -> str:
        return "SQLite, DicomThreadsCount 4"

    def config(self, workdir: Path) -> dict[str, object]:
        return {
            "Name": "noctispro-bench",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "TemporaryDirectory": str(workdir / "tmp"),
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
            # Accept C-ECHO / C-STORE from AEs not listed in DicomModalities.
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "DicomThreadsCount": 4,
            "MaximumPduLength": self.pdu,
            "SaveJobs": False,
            "HttpCompressionEnabled": False,
            "DeidentifyLogs": True,
        }

    def start(self, workdir: Path, associations: int) -> None:
        if not Path(self.binary).exists():
            raise TargetUnavailable(f"{self.binary} not found (apt-get install orthanc)")
        self.workdir = workdir
        for sub in ("storage", "index", "tmp"):
            (workdir / sub).mkdir(parents=True)
        self.port = free_port()
        self.http_port = free_port()
        cfg = workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(workdir), indent=2))
        # Orthanc's DICOM server is DCMTK's dcmnet: the same TCP_NODELAY variable applies.
        self.child = Child(
            self.name,
            [self.binary, str(cfg)],
            env=dcmtk_env(nodelay=self.nodelay),
            log_path=workdir / "orthanc.log",
            cwd=workdir,
        )
        wait_for_http(self.child, f"http://{LOOPBACK}:{self.http_port}/system")
        self._wait_echo()

    def stored(self) -> Stored:
        url = f"http://{LOOPBACK}:{self.http_port}/statistics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            stats = json.load(resp)
        files = sum(1 for p in (self.workdir / "storage").rglob("*") if p.is_file())
        return Stored(count=int(stats["CountInstances"]), files=files, detail=stats)


class NoctisPro(Target):
    """`noctispro dicom` on a fresh data dir (migrated first), SQLite + file storage."""

    name = "noctispro"
    aet = "NOCTISPRO"

    def __init__(self, *, pdu: int, nodelay: bool, processes: int | None, command: str) -> None:
        super().__init__(pdu=pdu, nodelay=nodelay)
        self.processes = processes
        self.command = command

    def mode(self, associations: int) -> str:
        return f"--processes {self.processes}" if self.processes else "default"

    def _env(self, data_dir: Path) -> dict[str, str]:
        # Nothing inherited may point it at another database or storage.
        env = {
            k: v
            for k, v in dcmtk_env(nodelay=self.nodelay).items()
            if not k.startswith("NOCTISPRO_") and k != "DATABASE_URL"
        }
        env.update(
            NOCTISPRO_DATA_DIR=str(data_dir),
            NOCTISPRO_DICOM_PORT=str(self.port),
            NOCTISPRO_BIND=LOOPBACK,
            NOCTISPRO_AE_TITLE=self.aet,
            NOCTISPRO_DICOM_MAX_PDU=str(self.pdu),
            NOCTISPRO_ADMIN_PASSWORD=secrets.token_urlsafe(16),
        )
        return env

    def start(self, workdir: Path, associations: int) -> None:
        if shutil.which(self.command) is None and not Path(self.command).exists():
            raise TargetUnavailable(f"{self.command} not found")
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True)
        self.port = free_port()
        env = self._env(self.data_dir)
        res = subprocess.run(
            [self.command, "migrate"], env=env, capture_output=True, text=True, check=False
        )
        (workdir / "migrate.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            lines = (res.stdout + res.stderr).strip().splitlines() or [""]
            raise TargetUnavailable(
                f"`noctispro migrate` failed (exit {res.returncode}): {lines[-1]} "
                f"[log: {workdir / 'migrate.log'}]"
            )
        argv = [self.command, "dicom"]
        if self.processes:
            argv += ["--processes", str(self.processes)]
        self.child = Child(self.name, argv, env=env, log_path=workdir / "noctispro-dicom.log")
        self._wait_echo()

    def stored(self) -> Stored:
        db = self.data_dir / "noctispro.sqlite3"
        if not db.exists():
            raise BenchError(f"NoctisPro database {db} does not exist")
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            uids = [row[0] for row in con.execute("SELECT sop_instance_uid FROM index_instance")]
        finally:
            con.close()
        storage = self.data_dir / "storage"
        files = sum(1 for _ in storage.rglob("*.dcm")) if storage.exists() else 0
        return Stored(count=len(uids), sop_uids=frozenset(uids), files=files)


def default_noctispro_command() -> str:
    """The console script next to this interpreter (the venv), else whatever is on PATH."""
    beside = Path(sys.executable).parent / "noctispro"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("noctispro") or "noctispro"
