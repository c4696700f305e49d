"""Users, roles and facilities.

A facility owns studies and the AE titles of its senders (DESIGN §3). Users see the
studies of the facilities they belong to; admins and `all_facilities` users see all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Set as AbstractSet

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
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


NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
node_name_validator = RegexValidator(
    NODE_NAME_PATTERN,
    "Node names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def validate_host(value: str) -> None:
    """An IPv4/IPv6 address or a DNS host name (underscores allowed: hosts files have them)."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    labels = value.split(".")
    if (
        len(value) > 253
        or not all(_HOST_LABEL.match(label) for label in labels)
        # All-digit last label: a mistyped IPv4 address such as 10.0.0.300, not a name.
        or labels[-1].isdigit()
    ):
        raise ValidationError(
            "%(value)r is neither an IP address nor a host name.",
            code="invalid_host",
            params={"value": value},
        )


class Operation(models.TextChoices):
    """What a remote node may ask of our SCP (C-ECHO is always allowed)."""

    STORE = "store", "C-STORE to us"
    FIND = "find", "C-FIND"
    MOVE = "move", "C-MOVE"
    GET = "get", "C-GET"


#: A node added without naming its operations may only send to us: reading patient data
#: (find, move, get) is granted explicitly.
DEFAULT_OPERATIONS = frozenset({Operation.STORE})


class RemoteNode(models.Model):
    """A DICOM peer we know: a C-MOVE destination, a sender, a PACS we query.

    The AE title is unique among nodes: a C-MOVE request names its destination by AE
    title only, and an incoming association is recognised by its calling AE title, so
    each AE title must lead to exactly one host and port.
    """

    name = models.CharField(max_length=64, unique=True, validators=[node_name_validator])
    ae_title = models.CharField(
        "AE title", max_length=16, unique=True, validators=[ae_title_validator]
    )
    host = models.CharField(max_length=253, validators=[validate_host])
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    facility = models.ForeignKey(
        Facility,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="nodes",
        help_text="The facility the node acts for; its queries and retrieves are scoped to it.",
    )
    allow_store = models.BooleanField("may store", default=Operation.STORE in DEFAULT_OPERATIONS)
    allow_find = models.BooleanField("may find", default=Operation.FIND in DEFAULT_OPERATIONS)
    allow_move = models.BooleanField("may move", default=Operation.MOVE in DEFAULT_OPERATIONS)
    allow_get = models.BooleanField("may get", default=Operation.GET in DEFAULT_OPERATIONS)
    tls = models.BooleanField(
        "TLS", default=False, help_text="Use DICOM TLS with this node (stored; not used yet)."
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "remote DICOM node"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535), name="node_port_range"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"

    @property
    def allowed_operations(self) -> list[Operation]:
        """The allowed operations in their canonical order (store, find, move, get)."""
        return [op for op in Operation if self.allows(op)]

    def allows(self, operation: Operation | str) -> bool:
        return bool(getattr(self, f"allow_{Operation(operation).value}"))

    def set_allowed_operations(self, operations: AbstractSet[Operation]) -> None:
        for op in Operation:
            setattr(self, f"allow_{op.value}", op in operations)

    def clean(self) -> None:
        """Normalise, and refuse a facility that contradicts the AE title's owner."""
        self.ae_title = self.ae_title.strip()
        self.host = self.host.strip()
        try:
            self.host = str(ipaddress.ip_address(self.host))
        except ValueError:
            self.host = self.host.lower()
        if self.facility_id is None or not self.ae_title:
            return
        owner = (
            FacilityAETitle.objects.filter(ae_title=self.ae_title)
            .select_related("facility")
            .first()
        )
        if owner is not None and owner.facility_id != self.facility_id:
            raise ValidationError(
                {
                    "facility": (
                        f"AE title {self.ae_title!r} is a sender of facility "
                        f"{owner.facility.code!r}; a node with it cannot act for another."
                    )
                }
            )
