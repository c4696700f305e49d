from django.contrib import admin

from noctispro.orders.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "scheduled_start_date",
        "scheduled_start_time",
        "accession_number",
        "patient_name",
        "patient_id",
        "modality",
        "scheduled_station_ae_title",
        "status",
        "facility",
    ]
    list_filter = ["status", "modality", "facility"]
    search_fields = ["accession_number", "patient_name", "patient_id", "study_instance_uid"]
    readonly_fields = ["study_instance_uid", "created_by", "created_at", "completed_at"]
