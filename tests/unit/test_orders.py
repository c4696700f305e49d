"""Orders (scheduled procedures) and the change-log listener that completes them."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError

from noctispro.accounts.scoping import Principal
from noctispro.accounts.services import add_facility
from noctispro.core.events import Listener, dispatch_pending
from noctispro.core.ingest import Origin, store_instance
from noctispro.index.models import ChangeKind, ListenerCursor
from noctispro.orders.models import Order, OrderStatus
from noctispro.orders.services import NewOrder, OrderConflict, create_order, visible_orders
from tests.factories import make_ct, to_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def _order(**changes: str) -> NewOrder:
    fields = {
        "patient_name": "Doe^Jane",
        "patient_id": "P1",
        "modality": "ct",
        "scheduled_start_date": "20261204",
        "scheduled_start_time": "0930",
    }
    return NewOrder(**(fields | changes))


def test_create_order_fills_the_worklist_identifiers():
    north = add_facility("NORTH", "North", ["NORTH_CT"])
    order = create_order(north, _order())
    assert order.modality == "CT"
    assert len(order.accession_number) == 14
    assert order.requested_procedure_id == order.accession_number
    assert order.study_instance_uid.startswith("2.25.")
    assert order.patient_name_search == "DOE^JANE"
    assert order.status == OrderStatus.SCHEDULED
    with pytest.raises(OrderConflict):
        create_order(north, _order(accession_number=order.accession_number))
    with pytest.raises(ValidationError):
        create_order(north, _order(scheduled_start_date="2026-12-04"))


def test_orders_are_scoped_by_facility():
    north = add_facility("NORTH", "North")
    south = add_facility("SOUTH", "South")
    create_order(north, _order(accession_number="N1"))
    create_order(south, _order(accession_number="S1"))
    only_north = Principal(label="n", facility_ids=frozenset({north.pk}))
    assert [o.accession_number for o in visible_orders(only_north)] == ["N1"]
    assert visible_orders(Principal(label="x", facility_ids=frozenset())).count() == 0
    assert visible_orders(Principal(label="all", facility_ids=None)).count() == 2


def test_arriving_images_complete_their_order():
    north = add_facility("NORTH", "North", ["NORTH_CT"])
    south = add_facility("SOUTH", "South", ["SOUTH_CT"])
    by_accession = create_order(north, _order(accession_number="ACC-7"))
    by_uid = create_order(north, _order(accession_number="ACC-8"))
    elsewhere = create_order(south, _order(accession_number="ACC-9"))
    north_ct = Origin(channel="test", calling_ae_title="NORTH_CT")
    store_instance(io.BytesIO(to_bytes(make_ct(accession="ACC-7"))), north_ct)
    store_instance(
        io.BytesIO(to_bytes(make_ct(study_uid=by_uid.study_instance_uid, accession=""))), north_ct
    )
    # Same accession, other facility: that order stays open.
    store_instance(io.BytesIO(to_bytes(make_ct(accession="ACC-9"))), north_ct)
    dispatch_pending()
    statuses = {o.accession_number: o.status for o in Order.objects.all()}
    assert statuses == {
        by_accession.accession_number: OrderStatus.COMPLETED,
        by_uid.accession_number: OrderStatus.COMPLETED,
        elsewhere.accession_number: OrderStatus.SCHEDULED,
    }
    assert Order.objects.get(accession_number="ACC-7").completed_at is not None


def test_a_failing_listener_is_offered_the_same_changes_again():
    seen: list[int] = []
    fail = {"once": True}

    def handle(changes):
        if fail.pop("once", False):
            raise RuntimeError("listener down")
        seen.extend(c.pk for c in changes)

    listener = Listener("test.flaky", frozenset({ChangeKind.NEW_INSTANCE}), handle)
    store_instance(io.BytesIO(to_bytes(make_ct())), Origin(channel="test"))
    assert dispatch_pending([listener]) == 0
    assert ListenerCursor.objects.get(name="test.flaky").last_change_id == 0
    assert dispatch_pending([listener]) == 1
    assert len(seen) == 1
    assert dispatch_pending([listener]) == 0  # caught up: nothing offered twice
    store_instance(io.BytesIO(to_bytes(make_ct())), Origin(channel="test"))
    assert dispatch_pending([listener]) == 1
    assert len(seen) == 2
