"""`noctispro serve`: run web, api, dicom and worker as child processes.

Each child logs to `<data dir>/logs/<name>.log`. A child that exits is restarted with
backoff and the crash is reported; SIGINT/SIGTERM stop every child (SIGTERM, then
SIGKILL after a grace period). Children get PR_SET_PDEATHSIG so they do not outlive a
supervisor that was killed outright.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from noctispro.conf import Settings, get_settings

log = logging.getLogger("noctispro.supervisor")

SERVICES = ("web", "api", "dicom", "worker")
GRACE_SECONDS = 10.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0
ANNOUNCE_WITHIN = 30.0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    restarts: int = 0
    argv: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops us
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.started_at = time.monotonic()

    def closed(self) -> None:
        if self.log_file:
            self.log_file.close()
        self.proc = None


class Supervisor:
    def __init__(self, settings: Settings, services: tuple[str, ...] = SERVICES) -> None:
        self.settings = settings
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self.children = [
            Child(
                name=name,
                log_path=settings.logs_dir / f"{name}.log",
                argv=[sys.executable, "-m", "noctispro", name, "--no-prepare"],
            )
            for name in services
        ]
        self.stopping = False

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("received %s; stopping all services", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in self.children:
            child.start()
            log.info(
                "started %s (pid %s), log %s",
                child.name,
                child.proc and child.proc.pid,
                child.log_path,
            )
        # Announce once every port answers (or after ANNOUNCE_WITHIN s), checking from
        # the monitoring loop so that a child crashing at start is still restarted.
        announce_by = time.monotonic() + ANNOUNCE_WITHIN
        announced = False
        while not self.stopping:
            self._tick()
            if not announced:
                up = self._ports_answering()
                if all(up.values()) or time.monotonic() > announce_by:
                    self._announce(up)
                    announced = True
            time.sleep(0.2)
        self._stop_all()
        return 0

    def _ports(self) -> tuple[str, dict[str, int]]:
        s = self.settings
        host = "127.0.0.1" if s.bind in {"0.0.0.0", "::"} else s.bind
        return host, {"web": s.web_port, "api": s.api_port, "dicom": s.dicom_port}

    def _ports_answering(self) -> dict[str, bool]:
        host, ports = self._ports()
        return {name: _answers(host, port) for name, port in ports.items()}

    def _tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if now >= child.next_start and not self.stopping:
                    child.start()
                    log.info("restarted %s (pid %s)", child.name, child.proc and child.proc.pid)
                continue
            code = child.proc.poll()
            if code is None:
                if now - child.started_at > HEALTHY_AFTER:
                    child.backoff = 1.0
                continue
            child.closed()
            if self.stopping:
                continue
            child.restarts += 1
            log.error(
                "%s exited with code %s; restarting in %.0f s (restart #%d, see %s)",
                child.name,
                code,
                child.backoff,
                child.restarts,
                child.log_path,
            )
            child.next_start = now + child.backoff
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.proc is not None]
        for child in running:
            assert child.proc is not None
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", child.name, GRACE_SECONDS)
                child.proc.kill()
                child.proc.wait()
            child.closed()
        log.info("all services stopped")

    def _announce(self, up: dict[str, bool]) -> None:
        s = self.settings
        host, _ = self._ports()
        secret = s.secrets_dir / "admin_password"
        password_hint = (
            f"the generated password is in {secret}"
            if secret.exists()
            else "the password is the one NOCTISPRO_ADMIN_PASSWORD gave at first start"
        )

        def state(name: str) -> str:
            return "" if up[name] else "  (not answering yet)"

        lines = [
            "",
            "NoctisPro is running:",
            f"  web    http://{host}:{s.web_port}/{state('web')}",
            f"  api    http://{host}:{s.api_port}/api/v1/docs{state('api')}",
            f"  DICOM  {s.ae_title}@{host}:{s.dicom_port}{state('dicom')}",
            *(
                [f"  DICOM  {s.ae_title}@{host}:{s.dicom_tls_port} (TLS)"]
                if s.dicom_tls_enabled
                else []
            ),
            f"  data   {s.data_dir}",
            f"  logs   {s.logs_dir}/{{web,api,dicom,worker}}.log",
            f"  admin  sign in as 'admin'; {password_hint}",
            "Press Ctrl-C to stop.",
            "",
        ]
        print("\n".join(lines), flush=True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def serve() -> int:
    settings = get_settings()
    os.environ.setdefault("NOCTISPRO_DATA_DIR", str(settings.data_dir))
    return Supervisor(settings).run()
