"""Jobs and worker heartbeats in the admin: to look at, not to edit (workers own the rows)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from noctispro.jobs.models import Job, WorkerHeartbeat
from noctispro.jobs.queue import cancel


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "state", "progress", "attempts", "created_at", "finished_at"]
    list_filter = ["state", "kind"]
    search_fields = ["kind", "locked_by"]
    date_hierarchy = "created_at"
    actions = ["cancel_jobs"]

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        n = sum(cancel(pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"cancel requested for {n} job(s)", messages.SUCCESS)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "backend", "hostname", "pid", "started_at", "last_seen"]
    list_filter = ["backend"]
