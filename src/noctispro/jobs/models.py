"""The job table is the truth for every backend: state, progress, result, error, cancel.

With Celery the broker only carries job ids, so a lost message or a dead worker never
loses a job: the row says what is left to do.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Job(models.Model):
    kind = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.PENDING)
    # Attempts started so far; a claim adds one, an abandoned run gives it back.
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    run_after = models.DateTimeField(default=timezone.now)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=255, blank=True)
    result = models.JSONField(null=True, blank=True)
    # Traceback of the last failure; kept when a later attempt succeeds.
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # The worker that ran the last attempt; with `attempts` it identifies the claim.
    locked_by = models.CharField(max_length=255, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Who asked for it (None: the system); users see their own jobs, admins all.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "run_after"], name="job_state_run_after_idx"),
            models.Index(fields=["state", "lease_expires_at"], name="job_state_lease_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__gte=0.0, progress__lte=1.0),
                name="job_progress_fraction",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES


class WorkerBackend(models.TextChoices):
    DATABASE = "database"
    CELERY = "celery"


class WorkerHeartbeat(models.Model):
    """One row per worker process, refreshed while it runs; the health check reads it."""

    name = models.CharField(max_length=255, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    backend = models.CharField(max_length=16, choices=WorkerBackend.choices)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name
