"""The worklist C-FIND handler on its own: request reading, matching, C-CANCEL."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset

from noctispro.accounts.facilities import forget_cached_facilities
from noctispro.accounts.services import add_facility
from noctispro.dimse import access
from noctispro.dimse.worklist import handle_worklist_find, match_condition, read_request
from noctispro.orders.models import Order
from noctispro.orders.services import NewOrder, create_order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    forget_cached_facilities()
    access.forget()
    yield
    forget_cached_facilities()
    access.forget()


def _event(identifier: Dataset, *, cancelled: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        identifier=identifier,
        is_cancelled=cancelled,
        assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="WEST_CT")),
    )


def _identifier(**step: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    item = Dataset()
    for keyword, value in step.items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def test_cancel_stops_the_responses():
    west = add_facility("WEST", "West", ["WEST_CT"])
    for n in range(3):
        create_order(
            west,
            NewOrder(
                patient_name=f"P^{n}",
                patient_id=str(n),
                modality="CT",
                scheduled_start_date="20261204",
            ),
        )
    responses = list(handle_worklist_find(_event(_identifier(Modality="CT"))))
    assert [status for status, _ in responses] == [0xFF00] * 3
    cancelled = list(handle_worklist_find(_event(_identifier(Modality="CT"), cancelled=True)))
    assert [status for status, _ in cancelled] == [0xFE00]


def test_two_step_items_are_refused():
    ds = _identifier(Modality="CT")
    ds.ScheduledProcedureStepSequence.append(Dataset())
    [(status, _)] = list(handle_worklist_find(_event(ds)))
    assert status.Status == 0xA900


def test_step_keys_filter_the_orders():
    west = add_facility("WEST", "West")
    order = create_order(
        west,
        NewOrder(
            patient_name="Doe^Jane",
            patient_id="1",
            modality="MR",
            scheduled_start_date="20261204",
            scheduled_start_time="0930",
            scheduled_station_ae_title="MR1",
        ),
    )

    def matches(**step: str) -> list[int]:
        condition = match_condition(read_request(_identifier(**step)))
        return list(Order.objects.filter(condition).values_list("pk", flat=True))

    assert matches(Modality="MR", ScheduledStationAETitle="MR*") == [order.pk]
    assert matches(ScheduledProcedureStepStartTime="0900-1000") == [order.pk]
    assert matches(ScheduledProcedureStepStartTime="1000-") == []
    assert matches(Modality="CT") == []
