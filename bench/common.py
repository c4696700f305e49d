"""Shared helpers for the benchmarks: ports, child processes, DCMTK, machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """A benchmark run that must not print a number."""


class TargetUnavailable(BenchError):
    """The target could not be started here; it is skipped, not failed."""


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def dcmtk_env(*, nodelay: bool = True) -> dict[str, str]:
    """Environment for a DCMTK tool (or Orthanc, which uses DCMTK's network code).

    DCMTK >= 3.6.x leaves Nagle's algorithm on unless TCP_NODELAY=1 is in the
    environment (or DCMTK was built with DISABLE_NAGLE_ALGORITHM, Debian's is not).
    On loopback that costs a delayed-ACK stall per PDU, about 20x on ingest.
    """
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1" if nodelay else "0"
    return env


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} not found on PATH (install dcmtk)")
    return path


class Child:
    """A server process we started, in its own process group, logged to a file.

    `stop()` ends that group only (SIGTERM, then SIGKILL after a grace period);
    storescp --fork children are in the same group.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=grace)
        else:
            # The leader is gone; make sure no forked child of ours lingers.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def wait_for_echo(
    child: Child, aet: str, port: int, *, timeout: float = 60.0, env: Mapping[str, str]
) -> None:
    """Poll with DCMTK echoscu until the peer answers C-ECHO, or fail with its log."""
    echoscu = require_tool("echoscu")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not child.alive():
            raise TargetUnavailable(
                f"{child.name} exited with code {child.proc.returncode} before answering "
                f"C-ECHO; log {child.log_path}:\n{child.log_tail()}"
            )
        res = subprocess.run(
            [echoscu, "-to", "5", "-aec", aet, LOOPBACK, str(port)],
            env=dict(env),
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode == 0:
            return
        last = (res.stdout + res.stderr).strip()
        time.sleep(0.2)
    raise TargetUnavailable(
        f"{child.name} did not answer C-ECHO on {LOOPBACK}:{port} as {aet} within "
        f"{timeout:.0f}s (echoscu: {last}); log {child.log_path}:\n{child.log_tail()}"
    )


def wait_for_http(child: Child, url: str, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise TargetUnavailable(
                f"{child.name} exited with code {child.proc.returncode}; "
                f"log {child.log_path}:\n{child.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TargetUnavailable(f"{child.name}: {url} not answering within {timeout:.0f}s")


def _first_line(argv: Sequence[str]) -> str:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    for line in (res.stdout + res.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unavailable"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return round(int(m.group(1)) / 1024**2, 1) if m else None


def _fs_type(path: Path) -> str:
    try:
        res = subprocess.run(
            ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False
        )
        return res.stdout.split()[-1]
    except (OSError, IndexError):
        return "unknown"


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts(workdir: Path) -> dict[str, object]:
    orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": sys.version.split()[0],
        "pydicom": _dist_version("pydicom"),
        "pynetdicom": _dist_version("pynetdicom"),
        "noctispro": _dist_version("noctispro"),
        "dcmtk": _first_line(["storescu", "--version"]).strip("$ "),
        "orthanc": _first_line([orthanc, "--version"]),
        "workdir": str(workdir),
        "workdir_fs": _fs_type(workdir),
    }
