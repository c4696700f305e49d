"""The worker in Celery mode (NOCTISPRO_BROKER_URL=redis://...), against the local Redis.

Same checks as test_worker, through the broker: the test process enqueues with the
same broker setting, so dispatch on commit goes to Redis; the job row stays the truth.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from noctispro.conf import reset_settings
from tests.integration.test_worker import (
    WorkerProcess,
    wait_for,
    wait_state,
    worker_database,
    workers,
)

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 7
BROKER_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"

pytestmark = [pytest.mark.integration, pytest.mark.celery]


def _redis_or_skip() -> Any:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc})")
    return client


@pytest.fixture(scope="module")
def celery_env(
    tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any
) -> Iterator[dict[str, str]]:
    from noctispro.jobs.celery_app import QUEUE, reset_celery_app

    client = _redis_or_skip()
    client.delete(QUEUE)  # messages left by an earlier run point at another database
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOCTISPRO_BROKER_URL", BROKER_URL)
        reset_settings()
        reset_celery_app()
        try:
            with worker_database(
                tmp_path_factory.mktemp("celery"),
                django_db_blocker,
                {"NOCTISPRO_BROKER_URL": BROKER_URL},
            ) as env:
                yield env
        finally:
            mp.undo()
            reset_settings()
            reset_celery_app()


@pytest.fixture
def start_worker(celery_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from noctispro.jobs.models import Job, WorkerHeartbeat

    Job.objects.all().delete()
    WorkerHeartbeat.objects.all().delete()
    with workers(tmp_path) as start:
        yield lambda concurrency=1: start(celery_env, concurrency)


def test_celery_worker_runs_jobs_retries_and_heartbeats(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue, latest_heartbeat

    w = start_worker(concurrency=2)
    beat = latest_heartbeat()
    assert beat is not None and (beat.pid, beat.backend) == (w.pid, "celery")

    added = enqueue("itest.add", {"a": 40, "b": 2})
    delayed = enqueue("itest.add", {"a": 1, "b": 1}, delay_seconds=1)
    retried = enqueue("itest.flaky", {"fail_times": 1})

    assert wait_state(added.pk, {"succeeded"}, 15, w).result == 42
    row = wait_state(retried.pk, {"succeeded", "failed"}, 15, w)
    assert (row.state, row.result, row.attempts) == ("succeeded", 2, 2)
    row = wait_state(delayed.pk, {"succeeded"}, 15, w)
    assert row.started_at is not None and row.started_at >= delayed.run_after

    started = time.monotonic()
    assert w.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 8
    assert latest_heartbeat() is None


def test_cancel_a_job_running_on_celery(start_worker: Callable[..., WorkerProcess]) -> None:
    from noctispro.jobs import cancel, enqueue

    w = start_worker()
    created = enqueue("itest.sleep", {"seconds": 60})
    wait_state(created.pk, {"running"}, 15, w)

    assert cancel(created.pk)

    row = wait_state(created.pk, {"cancelled", "succeeded", "failed"}, 10, w)
    assert (row.state, row.attempts, row.result) == ("cancelled", 1, None)


def test_job_of_a_killed_celery_worker_is_finished_by_the_next(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue
    from noctispro.jobs.models import Job

    first = start_worker()
    created = enqueue("itest.sleep", {"seconds": 1.0})
    wait_for(
        lambda: Job.objects.filter(pk=created.pk, state="running", progress__gt=0).exists(),
        15,
        first.log,
        first,
    )
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(10)

    second = start_worker()
    row = wait_state(created.pk, {"succeeded", "failed"}, 20, second)

    assert (row.state, row.attempts) == ("succeeded", 2)
    assert f":{second.pid}:" in row.locked_by and "expired" in row.error


def test_sigterm_stops_a_busy_celery_worker_and_returns_the_job(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from noctispro.jobs import enqueue

    w = start_worker()
    created = enqueue("itest.sleep", {"seconds": 60})
    wait_state(created.pk, {"running"}, 15, w)

    started = time.monotonic()
    assert w.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 8

    created.refresh_from_db()
    assert (created.state, created.attempts, created.lease_expires_at) == ("pending", 0, None)
    assert w.log().count("itest.sleep: attempt") == 1  # not claimed again while stopping
