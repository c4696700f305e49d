from django.contrib import admin

from noctispro.index.models import Change, Instance, Patient, Series, StorageCommitment, Study


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["patient_name", "patient_id", "issuer_of_patient_id", "facility"]
    search_fields = ["patient_name", "patient_id"]
    list_filter = ["facility"]


class SeriesInline(admin.TabularInline):
    model = Series
    fields = ("series_number", "modality", "series_description", "number_of_instances")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = [
        "study_date",
        "patient_name",
        "patient_id",
        "accession_number",
        "modalities_in_study",
        "study_description",
        "number_of_instances",
        "facility",
    ]
    list_filter = ["facility", "modalities_in_study"]
    search_fields = ["patient_name", "patient_id", "accession_number", "study_instance_uid"]
    readonly_fields = [f.name for f in Study._meta.fields if f.name != "facility"]
    inlines = [SeriesInline]


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ["series_instance_uid", "modality", "series_number", "number_of_instances"]
    search_fields = ["series_instance_uid"]
    readonly_fields = [f.name for f in Series._meta.fields]


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = [
        "sop_instance_uid",
        "sop_class_uid",
        "size_bytes",
        "received_at",
        "source_ae_title",
    ]
    search_fields = ["sop_instance_uid"]
    readonly_fields = [f.name for f in Instance._meta.fields]


@admin.register(Change)
class ChangeAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "study_instance_uid", "sop_instance_uid", "created_at"]
    list_filter = ["kind"]
    readonly_fields = [f.name for f in Change._meta.fields]


@admin.register(StorageCommitment)
class StorageCommitmentAdmin(admin.ModelAdmin):
    list_display = [
        "received_at",
        "calling_ae_title",
        "transaction_uid",
        "requested",
        "state",
        "delivery",
        "reported_at",
    ]
    list_filter = ["state", "delivery", "calling_ae_title"]
    search_fields = ["transaction_uid", "calling_ae_title"]
    readonly_fields = [f.name for f in StorageCommitment._meta.fields]
