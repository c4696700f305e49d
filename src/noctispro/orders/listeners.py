"""Orders are done when their images arrive (PS3.4 K: the worklist lists what is still to do)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from noctispro.core.events import Listener
from noctispro.index.models import Change, ChangeKind, Study
from noctispro.orders.models import Order, OrderStatus

OPEN = [OrderStatus.SCHEDULED, OrderStatus.ARRIVED, OrderStatus.STARTED]


def complete_orders(changes: Sequence[Change]) -> None:
    """Mark the open orders of newly arrived studies completed (by Study UID or accession)."""
    uids = {c.study_instance_uid for c in changes}
    now = timezone.now()
    for study in Study.objects.filter(study_instance_uid__in=uids).only(
        "facility_id", "accession_number", "study_instance_uid"
    ):
        open_orders = Order.objects.filter(facility_id=study.facility_id, status__in=OPEN)
        by_uid = open_orders.filter(study_instance_uid=study.study_instance_uid)
        if by_uid.update(status=OrderStatus.COMPLETED, completed_at=now):
            continue
        if study.accession_number:
            open_orders.filter(accession_number=study.accession_number).update(
                status=OrderStatus.COMPLETED, completed_at=now
            )


ORDER_COMPLETION = Listener(
    name="orders.completion", kinds=frozenset({ChangeKind.NEW_STUDY}), handle=complete_orders
)
