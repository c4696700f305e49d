"""Creating and listing orders; reads are scoped by facility like studies."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from pydicom.uid import generate_uid

from noctispro.accounts.models import Facility, User
from noctispro.accounts.scoping import Principal, scope_to_facilities
from noctispro.orders.models import Order, OrderStatus


class OrderConflict(ValueError):
    pass


@dataclass(frozen=True)
class NewOrder:
    patient_name: str
    patient_id: str
    modality: str
    scheduled_start_date: str
    scheduled_start_time: str = ""
    accession_number: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    referring_physician_name: str = ""
    requested_procedure_description: str = ""
    scheduled_procedure_step_description: str = ""
    scheduled_station_ae_title: str = ""
    scheduled_performing_physician_name: str = ""


def new_accession_number() -> str:
    """YYYYMMDD + 6 random digits: 14 characters, under SH's 16."""
    return f"{date.today():%Y%m%d}{secrets.randbelow(10**6):06d}"


def create_order(facility: Facility, data: NewOrder, *, created_by: User | None = None) -> Order:
    accession = data.accession_number or new_accession_number()
    order = Order(
        facility=facility,
        accession_number=accession,
        patient_name=data.patient_name,
        patient_id=data.patient_id,
        issuer_of_patient_id=data.issuer_of_patient_id,
        patient_birth_date=data.patient_birth_date,
        patient_sex=data.patient_sex,
        referring_physician_name=data.referring_physician_name,
        requested_procedure_id=accession,
        requested_procedure_description=data.requested_procedure_description,
        scheduled_procedure_step_id=f"{accession}.1"[:16],
        scheduled_procedure_step_description=data.scheduled_procedure_step_description,
        scheduled_station_ae_title=data.scheduled_station_ae_title,
        scheduled_performing_physician_name=data.scheduled_performing_physician_name,
        modality=data.modality.upper(),
        scheduled_start_date=data.scheduled_start_date,
        scheduled_start_time=data.scheduled_start_time,
        # A UUID-derived UID (PS3.5 B.2): no organisation root needed.
        study_instance_uid=generate_uid(prefix=None),
        created_by=created_by,
    )
    # Uniqueness is left to the database (race-safe), reported as OrderConflict.
    order.full_clean(
        exclude=["patient_name_search", "scheduled_performing_physician_name_search"],
        validate_unique=False,
        validate_constraints=False,
    )
    try:
        with transaction.atomic():
            order.save()
    except IntegrityError as exc:
        raise OrderConflict(
            f"facility {facility.code} already has an order with accession {accession}"
        ) from exc
    return order


def visible_orders(principal: Principal) -> QuerySet[Order]:
    return scope_to_facilities(principal, Order.objects.select_related("facility"))


def open_orders(principal: Principal) -> QuerySet[Order]:
    return visible_orders(principal).exclude(
        status__in=[OrderStatus.COMPLETED, OrderStatus.DISCONTINUED]
    )
