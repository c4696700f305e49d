"""Listeners fed from the change log after commit (DESIGN §5, §6.6 and §6.8).

A listener reads the durable change log from its own cursor, so one that was down (or a
worker that was stopped) catches up on what it missed. Listeners are notifications:
an error is logged and the same changes are offered again on the next round, so they
must be idempotent. Several workers may dispatch at once; the cursor only moves
forward (compare-and-set), and at worst a batch is handled twice.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import transaction

from noctispro.index.models import Change, ListenerCursor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    name: str
    kinds: frozenset[str]
    handle: Callable[[Sequence[Change]], None]


#: "module:attribute" of every listener; imported when the dispatcher first runs.
LISTENERS: list[str] = [
    "noctispro.orders.listeners:ORDER_COMPLETION",
    "noctispro.index.metadata:INSTANCE_METADATA",
]


def load_listeners() -> list[Listener]:
    listeners = []
    for path in LISTENERS:
        module, _, attribute = path.partition(":")
        listeners.append(getattr(importlib.import_module(module), attribute))
    return listeners


def dispatch_pending(listeners: Sequence[Listener] | None = None, batch: int = 500) -> int:
    """Offer each listener the changes after its cursor; return how many were handled."""
    handled = 0
    for listener in load_listeners() if listeners is None else listeners:
        cursor, _ = ListenerCursor.objects.get_or_create(name=listener.name)
        start = cursor.last_change_id
        changes = list(Change.objects.filter(id__gt=start).order_by("id")[:batch])
        if not changes:
            continue
        relevant = [c for c in changes if c.kind in listener.kinds]
        try:
            if relevant:
                with transaction.atomic():
                    listener.handle(relevant)
        except Exception:
            log.exception(
                "listener %s failed on changes %s..%s", listener.name, start + 1, changes[-1].pk
            )
            continue
        ListenerCursor.objects.filter(name=listener.name, last_change_id=start).update(
            last_change_id=changes[-1].pk
        )
        handled += len(relevant)
    return handled
