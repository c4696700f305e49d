"""A real NoctisPro on loopback for integration tests: own data dir, own database, free ports.

The archive runs as `noctispro serve` (or single services) in subprocesses, exactly as a
user starts it; tests talk to it over HTTP and DICOM, and look at its database and
storage from outside to check that nothing is lost or orphaned.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pynetdicom import AE
from pynetdicom.association import Association

NOCTISPRO = [sys.executable, "-m", "noctispro"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


def outer_database_url() -> str:
    return os.environ.get("DATABASE_URL", "")


def uses_postgres() -> bool:
    return outer_database_url().startswith(("postgres://", "postgresql://"))


def _pg_admin_dsn() -> str:
    parts = urlsplit(outer_database_url())
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5432
    password = f":{parts.password}" if parts.password else ""
    return f"postgresql://{user}{password}@{host}:{port}/postgres"


def create_postgres_database() -> str:
    """A fresh database next to the one CI gave us; returns its URL."""
    import psycopg

    name = f"noctispro_it_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = urlsplit(_pg_admin_dsn())
    return admin._replace(path=f"/{name}").geturl()


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Archive:
    root: Path
    database_url: str
    env: dict[str, str]
    web_port: int
    api_port: int
    dicom_port: int
    admin_password: str
    #: NOCTISPRO_DICOM_TLS_PORT; listened on only when a test sets a certificate and key.
    dicom_tls_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def storage_root(self) -> Path:
        return self.data_dir / "storage"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def run(self, *args: str, check: bool = True, timeout: float = 120, **kw: Any):
        """Run a `noctispro` command against this archive."""
        result = subprocess.run(
            [*NOCTISPRO, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"noctispro {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, command: str = "serve", *extra: str) -> subprocess.Popen:
        log = open(self.root / f"{command}.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*NOCTISPRO, command, *extra],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        ports = {
            "serve": [self.web_port, self.api_port, self.dicom_port],
            "web": [self.web_port],
            "api": [self.api_port],
            "dicom": [self.dicom_port],
        }.get(command, [])
        for port in ports:
            wait_for_port(port, proc=proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        finally:
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def output(self, command: str = "serve") -> str:
        path = self.root / f"{command}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def dcmtk(
        self,
        tool: str,
        *options: str,
        files: tuple[Path | str, ...] = (),
        port: int | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a DCMTK tool against our SCP (Nagle off, as for every peer here)."""
        import shutil

        path = shutil.which(tool)
        assert path, f"{tool} is not installed (apt-get install dcmtk); .ci/run installs it"
        return subprocess.run(
            [path, *options, "127.0.0.1", str(port or self.dicom_port), *map(str, files)],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def echoscu(
        self, calling_ae: str = "ECHOSCU", called_ae: str = "NOCTISPRO"
    ) -> subprocess.CompletedProcess:
        return self.dcmtk("echoscu", "-aet", calling_ae, "-aec", called_ae)

    def storescu(self, *paths: Path | str, calling_ae: str = "STORESCU") -> None:
        """Send files with DCMTK storescu; they must all be accepted."""
        result = self.dcmtk("storescu", "-aet", calling_ae, "-aec", "NOCTISPRO", files=paths)
        assert result.returncode == 0, result.stderr

    def associate(
        self,
        contexts: list[str],
        *,
        calling_ae: str = "PYNETDICOM",
        transfer_syntax: str | None = None,
    ) -> Association:
        """A pynetdicom association to our SCP, established or the test fails."""
        ae = AE(ae_title=calling_ae)
        for cx in contexts:
            ae.add_requested_context(cx, [transfer_syntax] if transfer_syntax else None)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title="NOCTISPRO")
        assert assoc.is_established, f"association as {calling_ae} refused"
        return assoc

    def wait_output(self, text: str, command: str = "serve", timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output(command)
            if text in out:
                return out
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in output:\n{self.output(command)}")

    def token(self, username: str = "admin", password: str | None = None) -> str:
        r = httpx.post(
            f"{self.api}/api/v1/auth/token",
            data={"username": username, "password": password or self.admin_password},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def client(self, username: str = "admin", password: str | None = None) -> httpx.Client:
        token = self.token(username, password)
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def web_login(self, username: str = "admin", password: str | None = None) -> httpx.Client:
        """A client signed in to the web pages through the login form (with its CSRF token)."""
        web = httpx.Client(base_url=self.web, follow_redirects=True, timeout=60)
        web.get("/login/")
        response = web.post(
            "/login/",
            data={
                "username": username,
                "password": password or self.admin_password,
                "csrfmiddlewaretoken": web.cookies["csrftoken"],
            },
        )
        assert response.status_code == 200 and "sessionid" in web.cookies, response.text[:500]
        return web

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the archive's database directly (for consistency checks only)."""
        if self.database_url.startswith("sqlite"):
            path = urlsplit(self.database_url).path[1:]
            with closing(sqlite3.connect(path)) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()

    def stored_files(self) -> set[str]:
        return {
            p.relative_to(self.storage_root).as_posix()
            for p in self.storage_root.glob("??/??/*.dcm")
        }

    def stored_bytes(self, sop_instance_uid: str) -> bytes:
        """The file the archive keeps for an instance, read from its storage."""
        rows = self.query(
            "SELECT storage_key FROM index_instance WHERE sop_instance_uid = ?",
            (sop_instance_uid,),
        )
        assert rows, f"instance {sop_instance_uid} is not in the index"
        return (self.storage_root / rows[0][0]).read_bytes()

    def assert_consistent(self) -> None:
        """Every instance row has its file, every file its row, no half-written spool file."""
        keys = {row[0] for row in self.query("SELECT storage_key FROM index_instance")}
        assert self.stored_files() == keys
        assert list((self.storage_root / ".tmp").glob("*")) == []


@contextmanager
def archive_at(root: Path, *, migrate: bool = True, **settings: str) -> Iterator[Archive]:
    root.mkdir(parents=True, exist_ok=True)
    database_url = (
        create_postgres_database()
        if uses_postgres()
        else f"sqlite:///{root / 'data' / 'noctispro.sqlite3'}"
    )
    password = "It-" + secrets.token_urlsafe(12)
    ports = {"web": free_port(), "api": free_port(), "dicom": free_port(), "tls": free_port()}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NOCTISPRO_")
        and key not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        {
            "NOCTISPRO_DATA_DIR": str(root / "data"),
            "DATABASE_URL": database_url,
            "NOCTISPRO_SECRET_KEY": secrets.token_urlsafe(40),
            "NOCTISPRO_ADMIN_PASSWORD": password,
            "NOCTISPRO_BIND": "127.0.0.1",
            "NOCTISPRO_WEB_PORT": str(ports["web"]),
            "NOCTISPRO_API_PORT": str(ports["api"]),
            "NOCTISPRO_DICOM_PORT": str(ports["dicom"]),
            "NOCTISPRO_DICOM_TLS_PORT": str(ports["tls"]),
            "NOCTISPRO_WORKER_HEARTBEAT_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings)
    archive = Archive(
        root=root,
        database_url=database_url,
        env=env,
        web_port=ports["web"],
        api_port=ports["api"],
        dicom_port=ports["dicom"],
        admin_password=password,
        dicom_tls_port=ports["tls"],
    )
    if migrate:
        archive.run("migrate")
    try:
        yield archive
    finally:
        archive.stop_all()
        if uses_postgres():
            drop_postgres_database(database_url)
