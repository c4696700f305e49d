"""Users, roles and facilities.

A facility owns studies and the AE titles of its senders (DESIGN §3). Users see the
studies of the facilities they belong to; admins and `all_facilities` users see all.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Administrator"
    RADIOLOGIST = "radiologist", "Radiologist"
    TECHNOLOGIST = "technologist", "Technologist"
    REFERRING = "referring", "Referring physician"


facility_code_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$",
    "Facility codes are 1-32 letters, digits, '.', '_' or '-'.",
)
ae_title_validator = RegexValidator(
    r"^[\x20-\x5b\x5d-\x7e]{1,16}$",
    "AE titles are 1-16 printable ASCII characters without a backslash (PS3.5 6.2).",
)


class Facility(models.Model):
    code = models.CharField(max_length=32, unique=True, validators=[facility_code_validator])
    name = models.CharField(max_length=200)
    is_default = models.BooleanField(
        default=False, help_text="Instances from unknown senders are filed here."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "facilities"
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="one_default_facility",
            )
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"


class FacilityAETitle(models.Model):
    """A calling AE title that files its instances under a facility."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="ae_titles")
    ae_title = models.CharField(max_length=16, unique=True, validators=[ae_title_validator])

    class Meta:
        verbose_name = "facility AE title"
        ordering = ["ae_title"]

    def __str__(self) -> str:
        return self.ae_title


class User(AbstractUser):
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.REFERRING)
    all_facilities = models.BooleanField(
        default=False, help_text="Sees the studies of every facility."
    )
    facilities = models.ManyToManyField(Facility, blank=True, related_name="members")

    @property
    def sees_all_facilities(self) -> bool:
        return self.is_superuser or self.role == Role.ADMIN or self.all_facilities


class AuthFailure(models.Model):
    """A failed login, kept for rate limiting across the web and api processes."""

    username = models.CharField(max_length=150, db_index=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["client_ip", "at"], name="authfail_ip_at")]

    def __str__(self) -> str:
        return f"{self.username} from {self.client_ip} at {self.at:%Y-%m-%d %H:%M:%S}"
