"""Orthanc (Debian's /usr/sbin/Orthanc) as a DICOM peer, on free loopback ports.

Each `orthanc_at(...)` starts an empty Orthanc from its own config: its own storage and
SQLite index in a temp dir, REST without authentication (loopback only), no plugins,
and `DicomModalities` naming our archive so Orthanc can C-STORE to it and C-MOVE to it.
Orthanc's DICOM code is DCMTK's, so TCP_NODELAY=1 in its environment turns Nagle off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.archive import free_port

ORTHANC = Path("/usr/sbin/Orthanc")


@dataclass
class Orthanc:
    root: Path
    http_port: int
    dicom_port: int
    ae_title: str
    modalities: dict[str, list[Any]] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def config(self) -> dict[str, Any]:
        return {
            "Name": "noctispro-test-peer",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "TemporaryDirectory": str(self.root / "tmp"),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            # Peers listed here may C-FIND and C-MOVE (Orthanc refuses unknown AEs).
            "DicomModalities": self.modalities,
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 30,
            "DicomThreadsCount": 2,
            "SaveJobs": False,
            "HttpCompressionEnabled": False,
            "DeidentifyLogs": True,
        }

    def start(self) -> None:
        for sub in ("storage", "index", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(ORTHANC), str(cfg)],
            cwd=self.root,
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Orthanc did not answer on {self.url}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.root / "orthanc.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # --- REST helpers ----------------------------------------------------------------

    def upload(self, *paths: Path) -> list[str]:
        """POST /instances: store files in Orthanc; returns Orthanc's instance ids."""
        ids = []
        with self.rest() as client:
            for path in paths:
                r = client.post("/instances", content=path.read_bytes())
                assert r.status_code == 200, r.text
                ids.append(r.json()["ID"])
        return ids

    def store_to(self, modality: str, resources: list[str]) -> dict[str, Any]:
        """POST /modalities/{id}/store: Orthanc C-STOREs the resources to a modality."""
        with self.rest() as client:
            r = client.post(
                f"/modalities/{modality}/store",
                json={"Resources": resources, "Synchronous": True},
            )
            assert r.status_code == 200, r.text
            return dict(r.json())

    def request_move_from(
        self, modality: str, study_instance_uid: str, target_aet: str | None = None
    ) -> httpx.Response:
        """POST /modalities/{id}/move: Orthanc asks `modality` (e.g. NoctisPro) to C-MOVE a
        study to `target_aet` (Orthanc itself by default). For the "we move to Orthanc"
        test once our C-MOVE SCP has landed."""
        with self.rest() as client:
            return client.post(
                f"/modalities/{modality}/move",
                json={
                    "Level": "Study",
                    "Resources": [{"StudyInstanceUID": study_instance_uid}],
                    "TargetAet": target_aet or self.ae_title,
                    "Synchronous": True,
                },
            )

    def instance_uids(self) -> set[str]:
        """SOP Instance UIDs Orthanc holds."""
        with self.rest() as client:
            ids = client.get("/instances").json()
            return {
                client.get(f"/instances/{i}/simplified-tags").json()["SOPInstanceUID"] for i in ids
            }

    def file_of(self, sop_instance_uid: str) -> bytes:
        """The DICOM file Orthanc stored for a SOP Instance UID."""
        with self.rest() as client:
            r = client.post(
                "/tools/find",
                json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
            )
            assert r.status_code == 200 and r.json(), r.text
            return client.get(f"/instances/{r.json()[0]}/file").content


@contextmanager
def orthanc_at(
    root: Path, *, ae_title: str = "ORTHANC", modalities: dict[str, list[Any]] | None = None
) -> Iterator[Orthanc]:
    """A running Orthanc; `modalities` maps ids to [AET, host, port] (Orthanc's format)."""
    if not ORTHANC.exists():
        pytest.fail(f"{ORTHANC} is not installed (apt-get install orthanc); .ci/run installs it")
    orthanc = Orthanc(
        root=root,
        http_port=free_port(),
        dicom_port=free_port(),
        ae_title=ae_title,
        modalities=dict(modalities or {}),
    )
    orthanc.start()
    try:
        yield orthanc
    finally:
        orthanc.stop()
