"""Scheduled procedures: what the Modality Worklist (PS3.4 K) offers to modalities.

One row is one Scheduled Procedure Step of one Requested Procedure of one Imaging
Service Request, flattened the way modalities query it (PS3.4 K.6.1.2.2). The Study
Instance UID is chosen when the order is created, so that the images the modality
makes for it land in the study the order announced.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from noctispro.accounts.models import Facility, ae_title_validator
from noctispro.index.matching import person_name_key

date_validator = RegexValidator(r"^\d{8}$", "Dates are YYYYMMDD (DICOM DA).")
time_validator = RegexValidator(
    r"^\d{2}(\d{2}(\d{2})?)?$", "Times are HH, HHMM or HHMMSS (DICOM TM)."
)


class OrderStatus(models.TextChoices):
    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


class Order(models.Model):
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="orders")
    accession_number = models.CharField(max_length=16)
    patient_name = models.CharField(max_length=324)
    patient_name_search = models.CharField(max_length=324, editable=False)
    patient_id = models.CharField(max_length=64)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_birth_date = models.CharField(max_length=8, blank=True, validators=[date_validator])
    patient_sex = models.CharField(
        max_length=1, blank=True, choices=[("M", "Male"), ("F", "Female"), ("O", "Other")]
    )
    referring_physician_name = models.CharField(max_length=324, blank=True)
    requested_procedure_id = models.CharField(max_length=16)
    requested_procedure_description = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64, unique=True)
    scheduled_procedure_step_id = models.CharField(max_length=16)
    scheduled_procedure_step_description = models.CharField(max_length=64, blank=True)
    scheduled_performing_physician_name = models.CharField(max_length=324, blank=True)
    scheduled_performing_physician_name_search = models.CharField(
        max_length=324, blank=True, editable=False
    )
    scheduled_station_ae_title = models.CharField(
        max_length=16, blank=True, validators=[ae_title_validator]
    )
    modality = models.CharField(max_length=16)
    scheduled_start_date = models.CharField(max_length=8, validators=[date_validator])
    scheduled_start_time = models.CharField(max_length=6, blank=True, validators=[time_validator])
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.SCHEDULED
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["scheduled_start_date", "scheduled_start_time", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "accession_number"], name="order_accession_per_facility"
            )
        ]
        indexes = [
            models.Index(fields=["status", "scheduled_start_date"], name="order_status_date_idx"),
            models.Index(fields=["accession_number"], name="order_accession_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.accession_number} {self.patient_name} {self.modality}"

    def save(self, *args: object, **kwargs: object) -> None:
        # The search columns hold `person_name_key`, as the index does (matching.py).
        self.patient_name_search = person_name_key(self.patient_name)
        self.scheduled_performing_physician_name_search = person_name_key(
            self.scheduled_performing_physician_name
        )
        super().save(*args, **kwargs)  # type: ignore[arg-type]
