"""The job queue with the database backend, run in-process one iteration at a time.

Transactional tests: on_commit dispatch, lease threads and concurrent claims need
real commits that other connections can see.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from noctispro.accounts.facilities import forget_cached_facilities
from noctispro.conf import get_settings
from noctispro.core.ingest import Origin, store_instance
from noctispro.index.models import Instance, Study
from noctispro.jobs import (
    Job,
    JobContext,
    JobState,
    PermanentJobError,
    cancel,
    celery_app,
    enqueue,
    get,
    job,
    latest_heartbeat,
    queue,
    runner,
    worker_alive,
)
from noctispro.jobs.runner import Outcome, claim, recover_expired_leases, release
from noctispro.jobs.worker import DatabaseWorker, run
from noctispro.storage import get_blob_store
from noctispro.storage.filesystem import FilesystemBlobStore
from tests.factories import make_ct, write

pytestmark = pytest.mark.django_db(transaction=True)


@job("test.add")
def add(ctx: JobContext, *, a: int, b: int) -> int:
    return a + b


@job("test.progress")
def report_progress(ctx: JobContext, *, spins: int) -> dict[str, Any]:
    ctx.progress(0.25, "a quarter")
    row = Job.objects.get(pk=ctx.job_id)
    for i in range(spins):
        ctx.progress(0.25 + 0.5 * i / spins, f"spin {i}")
    ctx.progress(1.0, "done")
    return {"seen": [row.progress, row.progress_message, row.state]}


@job("test.boom")
def boom(ctx: JobContext) -> None:
    raise ValueError("boom")


@job("test.flaky")
def flaky(ctx: JobContext, *, fail_times: int) -> int:
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return ctx.attempt


@job("test.permanent")
def permanent(ctx: JobContext) -> None:
    raise PermanentJobError("bad input, retrying will not help")


@job("test.loop")
def loop(ctx: JobContext, *, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a careless job: must not swallow the cancel
            ctx.check_cancelled()
        time.sleep(0.01)
    return "ran to the end"


@pytest.fixture(autouse=True)
def _database_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "broker_url", "")
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL_SECONDS", 0.05)


@pytest.fixture
def worker() -> DatabaseWorker:
    return DatabaseWorker("unit-worker")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def state_of(pk: int) -> str:
    return Job.objects.values_list("state", flat=True).get(pk=pk)


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_enqueued_job_runs_and_keeps_its_result(worker: DatabaseWorker) -> None:
    created = enqueue("test.add", {"a": 2, "b": 3})
    assert created.state == JobState.PENDING

    assert worker.run_once() == created.pk

    done = get(created.pk)
    assert done is not None
    assert (done.state, done.result, done.attempts, done.progress) == ("succeeded", 5, 1, 1.0)
    assert done.finished_at is not None and done.started_at is not None
    assert done.lease_expires_at is None and done.locked_by == "unit-worker"
    assert worker.run_once() is None


def test_dispatch_waits_for_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(queue, "dispatch", lambda pk, countdown=0: sent.append((pk, countdown)))

    with transaction.atomic():
        created = enqueue("test.add", {"a": 1, "b": 1}, delay_seconds=5)
        assert sent == []
    assert sent == [(created.pk, 5)]

    def enqueue_then_roll_back() -> None:
        with transaction.atomic():
            enqueue("test.add", {"a": 1, "b": 1})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        enqueue_then_roll_back()
    assert sent == [(created.pk, 5)]
    assert Job.objects.count() == 1


def test_delayed_job_waits(worker: DatabaseWorker) -> None:
    created = enqueue("test.add", {"a": 1, "b": 1}, delay_seconds=60)
    assert worker.run_once() is None
    Job.objects.filter(pk=created.pk).update(run_after=timezone.now())
    assert worker.run_once() == created.pk


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        ("test.nope", {}, "unknown job kind"),
        ("test.add", {"a": object(), "b": 1}, "JSON-serialisable"),
        ("test.add", {"a": 1}, "does not fit"),
        ("test.add", {"a": 1, "b": 2, "c": 3}, "does not fit"),
    ],
)
def test_enqueue_refuses_bad_jobs(kind: str, payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        enqueue(kind, payload)
    assert not Job.objects.exists()


def test_progress_is_written_and_throttled(
    worker: DatabaseWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL_SECONDS", 60.0)
    created = enqueue("test.progress", {"spins": 2000})

    with CaptureQueriesContext(connection) as queries:
        worker.run_once()

    done = Job.objects.get(pk=created.pk)
    assert done.state == JobState.SUCCEEDED
    assert done.result == {"seen": [0.25, "a quarter", "running"]}
    assert (done.progress, done.progress_message) == (1.0, "done")
    progress_writes = [
        q["sql"]
        for q in queries
        if q["sql"].startswith('UPDATE "jobs_job"') and '"progress_message" =' in q["sql"]
    ]
    # The claim resets the message, then the first report and the final 1.0; the 2000
    # reports in between are throttled away.
    assert len(progress_writes) == 3, progress_writes


def test_failures_retry_with_backoff_then_fail_keeping_the_error(
    worker: DatabaseWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 30.0)
    created = enqueue("test.boom", max_attempts=3)

    for attempt, backoff in [(1, 30), (2, 60)]:
        before = timezone.now()
        assert worker.run_once() == created.pk
        row = Job.objects.get(pk=created.pk)
        assert (row.state, row.attempts) == ("pending", attempt)
        assert "Traceback" in row.error and "ValueError: boom" in row.error
        wait = (row.run_after - before).total_seconds()
        assert backoff - 1 < wait < backoff + 5
        assert worker.run_once() is None  # not due yet
        Job.objects.filter(pk=created.pk).update(run_after=timezone.now())

    assert worker.run_once() == created.pk
    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.attempts) == ("failed", 3)
    assert "ValueError: boom" in row.error and row.finished_at is not None
    assert worker.run_once() is None


def test_transient_failure_then_success(
    worker: DatabaseWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.0)
    created = enqueue("test.flaky", {"fail_times": 1})
    worker.run_once()
    worker.run_once()
    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.result, row.attempts) == ("succeeded", 2, 2)
    assert "transient failure on attempt 1" in row.error


def test_backoff_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 10.0)
    monkeypatch.setattr(runner, "RETRY_CAP_SECONDS", 100.0)
    assert [runner.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 100]


def test_permanent_error_fails_at_once(worker: DatabaseWorker) -> None:
    created = enqueue("test.permanent", max_attempts=5)
    worker.run_once()
    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.attempts) == ("failed", 1)
    assert "bad input, retrying will not help" in row.error


def test_unknown_kind_in_the_table_fails_at_once(worker: DatabaseWorker) -> None:
    row = Job.objects.create(kind="test.from-a-newer-version", max_attempts=3)
    worker.run_once()
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("failed", 1)
    assert "unknown job kind" in row.error


def test_cancel_pending(worker: DatabaseWorker) -> None:
    created = enqueue("test.add", {"a": 1, "b": 2})
    assert cancel(created.pk) is True
    row = Job.objects.get(pk=created.pk)
    assert row.state == JobState.CANCELLED and row.finished_at is not None
    assert worker.run_once() is None
    assert cancel(created.pk) is False  # already finished
    assert cancel(999_999) is False


def test_cancel_running(worker: DatabaseWorker) -> None:
    created = enqueue("test.loop", {"seconds": 20})
    t = in_thread(worker.run_once)
    wait_for(lambda: state_of(created.pk) == JobState.RUNNING)

    assert cancel(created.pk) is True
    t.join(5)

    assert not t.is_alive()
    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.result, row.attempts) == ("cancelled", None, 1)
    assert row.finished_at is not None


def test_stopping_worker_hands_the_job_back(worker: DatabaseWorker) -> None:
    stop = threading.Event()
    stopping = DatabaseWorker("stopping-worker", stop)
    created = enqueue("test.loop", {"seconds": 20})
    t = in_thread(stopping.run_once)
    wait_for(lambda: state_of(created.pk) == JobState.RUNNING)

    stop.set()
    t.join(5)

    assert not t.is_alive()
    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.attempts, row.lease_expires_at) == ("pending", 0, None)
    assert row.run_after <= timezone.now()


def test_expired_lease_goes_back_to_pending_and_runs_again(worker: DatabaseWorker) -> None:
    past = timezone.now() - timedelta(seconds=1)
    lost = Job.objects.create(
        kind="test.add",
        payload={"a": 20, "b": 22},
        state=JobState.RUNNING,
        attempts=1,
        locked_by="dead-worker",
        started_at=past,
        lease_expires_at=past,
    )
    alive = Job.objects.create(
        kind="test.add",
        payload={"a": 0, "b": 0},
        state=JobState.RUNNING,
        attempts=1,
        locked_by="live-worker",
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )

    assert recover_expired_leases() == [lost.pk]

    lost.refresh_from_db()
    assert (lost.state, lost.lease_expires_at) == ("pending", None)
    assert "dead-worker" in lost.error and "expired" in lost.error
    assert state_of(alive.pk) == JobState.RUNNING
    assert worker.run_once() == lost.pk
    lost.refresh_from_db()
    assert (lost.state, lost.result, lost.attempts) == ("succeeded", 42, 2)


def test_expired_lease_on_the_last_attempt_fails() -> None:
    past = timezone.now() - timedelta(seconds=1)
    row = Job.objects.create(
        kind="test.add", state=JobState.RUNNING, attempts=3, max_attempts=3, lease_expires_at=past
    )
    assert recover_expired_leases() == []
    row.refresh_from_db()
    assert row.state == JobState.FAILED and "expired" in row.error


def test_a_worker_that_lost_its_lease_cannot_write() -> None:
    created = enqueue("test.add", {"a": 1, "b": 1})
    first = claim(created.pk, "slow-worker")
    assert first is not None
    Job.objects.filter(pk=created.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    recover_expired_leases()
    second = claim(created.pk, "other-worker")
    assert second is not None and second.attempt == 2

    assert release(first) is Outcome.LOST

    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.locked_by, row.attempts) == ("running", "other-worker", 2)


def test_only_one_of_many_concurrent_claims_wins() -> None:
    created = enqueue("test.add", {"a": 1, "b": 1})
    barrier = threading.Barrier(6)
    winners: list[object] = []

    def contend(n: int) -> None:
        try:
            barrier.wait()
            won = claim(created.pk, f"worker-{n}")
            if won is not None:
                winners.append(won)
        finally:
            connection.close()

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert len(winners) == 1
    assert Job.objects.get(pk=created.pk).attempts == 1


def test_dispatch_sends_to_celery_only_with_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(
        celery_app, "send_job", lambda pk, countdown=0: sent.append((pk, countdown))
    )
    queue.dispatch(1, 0)
    assert sent == []

    monkeypatch.setattr(get_settings(), "broker_url", "redis://127.0.0.1:1/0")
    created = enqueue("test.add", {"a": 1, "b": 1}, delay_seconds=2)
    assert sent == [(created.pk, 2)]

    def broker_down(pk: int, countdown: float = 0) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(celery_app, "send_job", broker_down)
    enqueue("test.add", {"a": 1, "b": 1})  # logged, not raised: the row is the truth


def test_celery_task_resends_a_message_that_came_early(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(
        celery_app, "send_job", lambda pk, countdown=0: sent.append((pk, countdown))
    )
    created = enqueue("test.add", {"a": 1, "b": 1}, delay_seconds=30)

    celery_app.run_job(created.pk)

    assert state_of(created.pk) == JobState.PENDING
    [(pk, countdown)] = sent
    assert pk == created.pk and 25 < countdown <= 30
    Job.objects.filter(pk=created.pk).update(run_after=timezone.now())
    celery_app.run_job(created.pk)
    assert Job.objects.get(pk=created.pk).result == 2


@pytest.fixture
def stored_study(tmp_path: Path) -> tuple[str, list[Instance]]:
    forget_cached_facilities()
    study_uid = "1.2.826.0.1.3680043.8.498.1001"
    for n in range(1, 5):
        path = write(make_ct(study_uid=study_uid, instance_number=n, seed=n), tmp_path / f"{n}.dcm")
        store_instance(path, Origin(channel="import"))
    return study_uid, list(
        Instance.objects.filter(study__study_instance_uid=study_uid).order_by("instance_number")
    )


def test_verify_study_finds_missing_and_tampered_blobs(
    worker: DatabaseWorker, stored_study: tuple[str, list[Instance]]
) -> None:
    study_uid, (intact, deleted, tampered, truncated) = stored_study
    store = get_blob_store()
    assert isinstance(store, FilesystemBlobStore)
    store.delete(deleted.storage_key)
    path = store.root / tampered.storage_key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one bit of pixel data
    path.write_bytes(bytes(data))
    path = store.root / truncated.storage_key
    path.write_bytes(path.read_bytes()[:400])

    created = enqueue("verify_study", {"study_instance_uid": study_uid})
    worker.run_once()

    row = Job.objects.get(pk=created.pk)
    assert row.state == JobState.SUCCEEDED, row.error
    assert row.result == {
        "checked": 4,
        "ok": 1,
        "missing": [deleted.sop_instance_uid],
        "mismatched": [tampered.sop_instance_uid, truncated.sop_instance_uid],
    }
    assert (row.progress, row.progress_message) == (1.0, "4/4 instances")
    assert intact.sop_instance_uid not in str(row.result)


def test_verify_study_of_an_intact_study(
    worker: DatabaseWorker, stored_study: tuple[str, list[Instance]]
) -> None:
    created = enqueue("verify_study", {"study_instance_uid": stored_study[0]})
    worker.run_once()
    assert Job.objects.get(pk=created.pk).result == {
        "checked": 4,
        "ok": 4,
        "missing": [],
        "mismatched": [],
    }


def test_verify_unknown_study_fails_without_retry(worker: DatabaseWorker) -> None:
    created = enqueue("verify_study", {"study_instance_uid": "1.2.3.4"})
    worker.run_once()
    row = Job.objects.get(pk=created.pk)
    assert (row.state, row.attempts) == ("failed", 1)
    assert "no study 1.2.3.4" in row.error


def test_worker_run_heartbeats_scans_stable_studies_and_stops(
    monkeypatch: pytest.MonkeyPatch, stored_study: tuple[str, list[Instance]]
) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "worker_heartbeat_seconds", 0.05)
    monkeypatch.setattr(settings, "worker_poll_seconds", 0.05)
    Study.objects.update(last_received_at=timezone.now() - timedelta(hours=1), is_stable=False)
    stop = threading.Event()
    t = in_thread(lambda: run(concurrency=2, stop=stop))
    try:
        created = enqueue("test.add", {"a": 4, "b": 5})
        wait_for(lambda: state_of(created.pk) == JobState.SUCCEEDED)
        wait_for(lambda: Study.objects.filter(is_stable=True).exists())
        beat = latest_heartbeat()
        assert beat is not None and beat.backend == "database"
        assert worker_alive()
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert latest_heartbeat() is None
    assert not worker_alive()
