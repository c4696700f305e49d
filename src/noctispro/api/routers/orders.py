"""Scheduled procedures for the Modality Worklist: create and list (PS3.4 K)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from django.core.exceptions import ValidationError
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from noctispro.api.deps import CallerDep, facility_for_write
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import Problem
from noctispro.orders.models import Order, OrderStatus
from noctispro.orders.services import NewOrder, OrderConflict, create_order, visible_orders

router = APIRouter(prefix="/orders", tags=["orders"], route_class=DjangoRoute)

DA = r"^\d{8}$"


class OrderIn(BaseModel):
    patient_name: str = Field(min_length=1, max_length=324, examples=["Doe^Jane"])
    patient_id: str = Field(min_length=1, max_length=64)
    issuer_of_patient_id: str = Field("", max_length=64)
    patient_birth_date: str = Field("", pattern=r"^(\d{8})?$")
    patient_sex: Literal["", "M", "F", "O"] = ""
    referring_physician_name: str = Field("", max_length=324)
    accession_number: str = Field("", max_length=16, description="Generated if empty")
    modality: str = Field(min_length=1, max_length=16, examples=["CT"])
    scheduled_station_ae_title: str = Field("", max_length=16, examples=["CT_SCANNER"])
    scheduled_start_date: str = Field(pattern=DA, examples=["20261204"])
    scheduled_start_time: str = Field("", pattern=r"^(\d{2}(\d{2}(\d{2})?)?)?$")
    requested_procedure_description: str = Field("", max_length=64)
    scheduled_procedure_step_description: str = Field("", max_length=64)
    scheduled_performing_physician_name: str = Field("", max_length=324)
    facility: str | None = Field(None, description="Facility code, if you have several")


class OrderOut(BaseModel):
    accession_number: str
    study_instance_uid: str
    patient_name: str
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: str
    patient_sex: str
    referring_physician_name: str
    modality: str
    scheduled_station_ae_title: str
    scheduled_start_date: str
    scheduled_start_time: str
    requested_procedure_id: str
    requested_procedure_description: str
    scheduled_procedure_step_id: str
    scheduled_procedure_step_description: str
    scheduled_performing_physician_name: str
    status: str
    facility: str
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        fields = {name: getattr(order, name) for name in cls.model_fields if name != "facility"}
        return cls(**fields, facility=order.facility.code)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses={409: {"model": Problem}, 403: {"model": Problem}},
    summary="Schedule a procedure; it appears on the Modality Worklist",
)
def add_order(body: OrderIn, caller: CallerDep) -> OrderOut:
    facility = facility_for_write(caller, body.facility)
    data = NewOrder(**body.model_dump(exclude={"facility"}))
    try:
        order = create_order(facility, data, created_by=caller.user)
    except OrderConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ValidationError as exc:
        raise HTTPException(422, exc.message_dict) from exc
    return OrderOut.of(order)


@router.get("", response_model=list[OrderOut], summary="Orders of your facilities")
def list_orders(
    caller: CallerDep,
    order_status: Annotated[
        OrderStatus | None, Query(alias="status", description="Only orders in this state")
    ] = None,
    date: Annotated[str | None, Query(pattern=DA, description="Scheduled on this day")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[OrderOut]:
    orders = visible_orders(caller.principal)
    if order_status:
        orders = orders.filter(status=order_status)
    if date:
        orders = orders.filter(scheduled_start_date=date)
    return [OrderOut.of(o) for o in orders[:limit]]
