"""The real worker process on a fresh database: runs jobs, survives kill -9, stops on SIGTERM.

The worker runs as `python -c "...; run()"` with its own data dir and DATABASE_URL
(a fresh SQLite file, or a fresh PostgreSQL database when the suite runs on
PostgreSQL), migrated by `django migrate` in a subprocess. This test process
enqueues through the public API against the same database: an extra connection
alias with a router that sends every query there.

The job kinds below are registered here and in the worker, whose start-up code
imports this module.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from noctispro.jobs import JobContext, job

ROOT = Path(__file__).resolve().parents[2]
ALIAS = "worker_db"
LEASE_SECONDS = "2"

pytestmark = pytest.mark.integration


@job("itest.add")
def add(ctx: JobContext, *, a: int, b: int) -> int:
    return a + b


@job("itest.flaky")
def flaky(ctx: JobContext, *, fail_times: int) -> int:
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return ctx.attempt


@job("itest.sleep")
def sleep(ctx: JobContext, *, seconds: float) -> dict[str, Any]:
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        ctx.progress(elapsed / seconds, f"{elapsed:.1f}s")
        time.sleep(0.05)
    return {"slept": seconds, "attempt": ctx.attempt}


WORKER_CODE = (
    "from noctispro.bootstrap import setup_django; setup_django()\n"
    "import tests.integration.test_worker\n"
    "import noctispro.jobs.runner as runner; runner.RETRY_BASE_SECONDS = 0.2\n"
    "from noctispro.jobs.worker import run; run(concurrency={concurrency})\n"
)


class _ToWorkerDatabase:
    """Route every query of this process to the worker's database."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        return ALIAS

    def db_for_write(self, model: type, **hints: Any) -> str:
        return ALIAS

    def allow_relation(self, *objs: Any, **hints: Any) -> bool:
        return True


@contextmanager
def fresh_database(tmp: Path) -> Iterator[str]:
    """A new empty database for the worker: PostgreSQL if the suite runs on it, else SQLite."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgresql", "postgres")):
        yield f"sqlite:///{tmp / 'worker.sqlite3'}"
        return
    import psycopg

    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres", query=""))
    name = f"noctispro_itest_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def routed_to(url: str) -> Iterator[None]:
    """Point this process's ORM at `url` (an extra alias plus a router)."""
    from django.conf import settings
    from django.db import connections
    from django.test.utils import override_settings

    from noctispro.web.settings import database_from_url

    configured = connections.configure_settings(
        {"default": copy.deepcopy(settings.DATABASES["default"]), ALIAS: database_from_url(url)}
    )
    connections.settings[ALIAS] = configured[ALIAS]
    try:
        with override_settings(DATABASE_ROUTERS=[_ToWorkerDatabase()]):
            yield
    finally:
        connections[ALIAS].close()
        with suppress(AttributeError):
            del connections[ALIAS]
        del connections.settings[ALIAS]


@contextmanager
def worker_database(
    tmp: Path, django_db_blocker: Any, extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Environment for worker processes on a fresh, migrated database shared with this process."""
    with fresh_database(tmp) as url:
        env = {
            **os.environ,
            "NOCTISPRO_DATA_DIR": str(tmp / "data"),
            "DATABASE_URL": url,
            "NOCTISPRO_BROKER_URL": "",
            "NOCTISPRO_JOB_LEASE_SECONDS": LEASE_SECONDS,
            "NOCTISPRO_WORKER_HEARTBEAT_SECONDS": "0.2",
            "NOCTISPRO_WORKER_POLL_SECONDS": "0.1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **(extra_env or {}),
        }
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--settings=noctispro.web.settings", "-v0"],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
        )
        with django_db_blocker.unblock(), routed_to(url):
            yield env


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 1) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE.format(concurrency=concurrency)],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 20.0) -> None:
        from noctispro.jobs.models import WorkerHeartbeat

        wait_for(
            lambda: WorkerHeartbeat.objects.filter(pid=self.pid).exists(),
            timeout,
            lambda: f"worker {self.pid} wrote no heartbeat:\n{self.log()}",
            self,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@contextmanager
def workers(tmp: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; every one is killed at the end, whatever happened."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], concurrency: int = 1) -> WorkerProcess:
        w = WorkerProcess(env, tmp / f"worker-{len(started)}.log", concurrency)
        started.append(w)
        w.wait_ready()
        return w

    try:
        yield start
    finally:
        for w in started:
            w.close()


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    describe: Callable[[], str] = lambda: "condition not met",
    watch: WorkerProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if watch is not None and watch.proc.poll() is not None:
            raise AssertionError(f"worker exited with {watch.proc.returncode}:\n{watch.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(describe())
        time.sleep(0.05)


def wait_state(job_id: int, states: set[str], timeout: float, watch: WorkerProcess) -> Any:
    from noctispro.jobs.models import Job

    def reached() -> bool:
        return Job.objects.filter(pk=job_id, state__in=states).exists()

    wait_for(
        reached,
        timeout,
        lambda: f"job {job_id}: {Job.objects.filter(pk=job_id).values().first()}\n{watch.log()}",
        watch,
    )
    return Job.objects.get(pk=job_id)


@pytest.fixture(scope="module")
def worker_env(
    tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any
) -> Iterator[dict[str, str]]:
    with worker_database(tmp_path_factory.mktemp("worker"), django_db_blocker) as env:
        yield env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from noctispro.jobs.models import Job, WorkerHeartbeat

    Job.objects.all().delete()
    WorkerHeartbeat.objects.all().delete()
    with workers(tmp_path) as start:
        yield lambda concurrency=1: start(worker_env, concurrency)


def test_worker_runs_jobs_retries_and_heartbeats(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue, latest_heartbeat

    w = start_worker()
    beat = latest_heartbeat()
    assert beat is not None and (beat.pid, beat.backend) == (w.pid, "database")

    added = enqueue("itest.add", {"a": 40, "b": 2})
    retried = enqueue("itest.flaky", {"fail_times": 1})

    assert wait_state(added.pk, {"succeeded"}, 10, w).result == 42
    row = wait_state(retried.pk, {"succeeded", "failed"}, 10, w)
    assert (row.state, row.result, row.attempts) == ("succeeded", 2, 2)
    assert "transient failure on attempt 1" in row.error

    started = time.monotonic()
    assert w.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    assert latest_heartbeat() is None


def test_job_of_a_killed_worker_is_finished_by_the_next(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue
    from noctispro.jobs.models import Job

    first = start_worker()
    created = enqueue("itest.sleep", {"seconds": 1.0})
    wait_for(
        lambda: Job.objects.filter(pk=created.pk, state="running", progress__gt=0).exists(),
        10,
        first.log,
        first,
    )
    first.proc.kill()  # SIGKILL: no clean-up, the lease just stops being renewed
    first.proc.wait(10)
    assert Job.objects.get(pk=created.pk).state == "running"

    second = start_worker()
    row = wait_state(created.pk, {"succeeded", "failed"}, 20, second)

    assert (row.state, row.attempts, row.result) == ("succeeded", 2, {"slept": 1.0, "attempt": 2})
    assert f":{second.pid}:" in row.locked_by
    assert f":{first.pid}:" in row.error and "expired" in row.error


def test_sigterm_stops_a_busy_worker_and_returns_the_job(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue, latest_heartbeat

    w = start_worker()
    created = enqueue("itest.sleep", {"seconds": 60})
    wait_state(created.pk, {"running"}, 10, w)

    started = time.monotonic()
    assert w.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 4

    created.refresh_from_db()
    assert (created.state, created.attempts, created.lease_expires_at) == ("pending", 0, None)
    assert latest_heartbeat() is None
    assert "returned to the queue" in w.log()


def test_two_workers_share_the_queue_without_running_a_job_twice(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue
    from noctispro.jobs.models import Job

    pool = [start_worker(concurrency=3), start_worker(concurrency=3)]
    ids = [enqueue("itest.add", {"a": n, "b": n}).pk for n in range(30)]

    wait_for(
        lambda: Job.objects.filter(pk__in=ids, state="succeeded").count() == len(ids),
        20,
        lambda: f"{list(Job.objects.values_list('state', flat=True))}\n{pool[0].log()}",
    )
    rows = Job.objects.filter(pk__in=ids)
    assert {row.attempts for row in rows} == {1}
    assert Counter(row.result for row in rows) == Counter(2 * n for n in range(30))
    assert {row.locked_by.split(":")[1] for row in rows} <= {str(w.pid) for w in pool}
