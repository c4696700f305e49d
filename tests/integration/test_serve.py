"""`noctispro serve`: start, announce, restart a crashed child, stop cleanly, restart."""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from contextlib import closing
from pathlib import Path

from pydicom.uid import generate_uid

from tests.factories import dataset_bytes, make_ct, to_bytes
from tests.integration.archive import Archive, archive_at, wait_for_port


def _child_pid(archive: Archive, name: str, after: int = 0) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = re.findall(rf"(?:started|restarted) {name} \(pid (\d+)\)", archive.output())
        if len(pids) > after:
            return int(pids[-1])
        time.sleep(0.2)
    raise AssertionError(f"no pid for {name} in:\n{archive.output()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_first_start_generates_and_prints_the_admin_password(tmp_path: Path) -> None:
    with archive_at(
        tmp_path / "a", migrate=False, NOCTISPRO_ADMIN_PASSWORD="", NOCTISPRO_SECRET_KEY=""
    ) as archive:
        proc = archive.start("serve")
        secret = archive.data_dir / "secrets" / "admin_password"
        out = archive.wait_output("Press Ctrl-C to stop.")
        password = secret.read_text().strip()
        assert f"password: {password}" in out
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert stat.S_IMODE((archive.data_dir / "secrets" / "secret_key").stat().st_mode) == 0o600
        assert f"http://127.0.0.1:{archive.web_port}/" in out
        for phi in (archive.data_dir / "noctispro.sqlite3", archive.data_dir / "logs" / "api.log"):
            if phi.exists():
                assert stat.S_IMODE(phi.stat().st_mode) & 0o007 == 0, phi
        assert f"NOCTISPRO@127.0.0.1:{archive.dicom_port}" in out
        assert archive.token("admin", password)
        assert archive.stop(proc) == 0


def test_serve_logs_restarts_a_crashed_child_and_stops_cleanly(new_archive: Archive) -> None:
    archive = new_archive
    proc = archive.start("serve")
    for name in ("web", "api", "dicom", "worker"):
        assert (archive.data_dir / "logs" / f"{name}.log").exists()
    pids = {name: _child_pid(archive, name) for name in ("web", "api", "dicom", "worker")}
    assert archive.echoscu().returncode == 0

    os.kill(pids["dicom"], signal.SIGKILL)
    new_pid = _child_pid(archive, "dicom", after=1)
    assert new_pid != pids["dicom"]
    assert re.search(r"dicom exited with code -9; restarting", archive.output())
    wait_for_port(archive.dicom_port)
    assert archive.echoscu().returncode == 0

    started = time.monotonic()
    assert archive.stop(proc, signal.SIGTERM) == 0
    assert time.monotonic() - started < 15
    pids["dicom"] = new_pid
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) outlived the supervisor"
    assert "all services stopped" in archive.output()


def test_everything_is_found_again_after_a_restart(new_archive: Archive) -> None:
    archive = new_archive
    proc = archive.start("serve")
    study_uid = generate_uid()
    sent = [to_bytes(make_ct(study_uid=study_uid, instance_number=i)) for i in range(3)]
    with archive.client() as api:
        r = api.post(
            "/api/v1/dicom/upload", files=[("files", (f"{i}.dcm", b)) for i, b in enumerate(sent)]
        )
        assert r.json()["summary"]["stored"] == 3
        before = api.get(f"/api/v1/dicom/studies/{study_uid}/metadata").json()
    assert archive.stop(proc, signal.SIGINT) == 0

    archive.start("serve")
    with archive.client() as api:
        after = api.get(f"/api/v1/dicom/studies/{study_uid}/metadata").json()
        assert after == before
        for instance in after["series"][0]["instances"]:
            body = api.get(f"/api/v1/dicom/instances/{instance['sop_instance_uid']}/file").content
            assert dataset_bytes(body) in [dataset_bytes(b) for b in sent]
    with closing(archive.web_login()) as web:
        assert study_uid in web.get("/").text
    archive.assert_consistent()
