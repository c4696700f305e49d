"""Modality Worklist C-FIND SCP (PS3.4 K), served from orders.

One order is one Scheduled Procedure Step (orders/models.py); a modality asks with the
Modality Worklist Information Model - FIND and gets one pending response per step.

Matching (PS3.4 K.6.1.2.2, C.2.2.2) uses `index.matching` on the Order columns: single
value, wildcards, date/time ranges, UID lists and universal matching, on the top-level
keys and on the keys inside the one item of the Scheduled Procedure Step Sequence
(sequence matching, C.2.2.2.6: a step matches when every key of the item matches).
PersonName keys follow NOCTISPRO_QUERY_CASE_INSENSITIVE_NAMES. Without a Scheduled
Procedure Step Status to match, completed and discontinued steps are left out: the
worklist lists what is still to do. Keys the worklist does not hold are returned empty
and, with a value, ignored like unsupported optional keys.

Responses hold exactly the requested keys; the sequence item holds the requested
sub-keys (an empty sequence in the request is universal matching and gets every held
step attribute). The identifier is read, and the response character set chosen, by the
same functions as the Q/R C-FIND (`dimse.find`). A calling AE sees the orders of its
facility and must be allowed to query (FIND).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pynetdicom import evt

from noctispro.accounts.models import Operation
from noctispro.accounts.scoping import principal_for_ae
from noctispro.conf import get_settings
from noctispro.dimse import access, statuses
from noctispro.dimse.find import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    PENDING,
    SPECIFIC_CHARACTER_SET,
    UNABLE_TO_PROCESS,
    BadIdentifier,
    Key,
    Response,
    _failure,
    read_identifier,
    response_charset,
)
from noctispro.index import matching
from noctispro.orders.models import Order, OrderStatus
from noctispro.orders.services import visible_orders

log = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SCHEDULED_PROCEDURE_STEP_SEQUENCE = "ScheduledProcedureStepSequence"
STEP_STATUS = "ScheduledProcedureStepStatus"
# Steps the worklist offers when the request does not ask for a status.
DONE = (OrderStatus.COMPLETED, OrderStatus.DISCONTINUED)

# Attributes of the Scheduled Procedure Step the orders hold (PS3.4 K.6.1.2.2), by level.
PROCEDURE: dict[str, matching.Column] = {
    "PatientName": matching.Column("patient_name", "PN", search_path="patient_name_search"),
    "PatientID": matching.Column("patient_id", "LO"),
    "IssuerOfPatientID": matching.Column("issuer_of_patient_id", "LO"),
    "PatientBirthDate": matching.Column("patient_birth_date", "DA"),
    "PatientSex": matching.Column("patient_sex", "CS"),
    "ReferringPhysicianName": matching.Column("referring_physician_name", "PN"),
    "AccessionNumber": matching.Column("accession_number", "SH"),
    "StudyInstanceUID": matching.Column("study_instance_uid", "UI"),
    "RequestedProcedureID": matching.Column("requested_procedure_id", "SH"),
    "RequestedProcedureDescription": matching.Column("requested_procedure_description", "LO"),
}
STEP: dict[str, matching.Column] = {
    "ScheduledStationAETitle": matching.Column("scheduled_station_ae_title", "AE"),
    "ScheduledProcedureStepStartDate": matching.Column("scheduled_start_date", "DA"),
    "ScheduledProcedureStepStartTime": matching.Column("scheduled_start_time", "TM"),
    "Modality": matching.Column("modality", "CS"),
    "ScheduledPerformingPhysicianName": matching.Column(
        "scheduled_performing_physician_name",
        "PN",
        search_path="scheduled_performing_physician_name_search",
    ),
    "ScheduledProcedureStepDescription": matching.Column(
        "scheduled_procedure_step_description", "LO"
    ),
    "ScheduledProcedureStepID": matching.Column("scheduled_procedure_step_id", "SH"),
    STEP_STATUS: matching.Column("status", "CS"),
}
# An empty Scheduled Procedure Step Sequence asks for every step attribute held.
ALL_STEP_KEYS = [
    Key(BaseTag(cast(int, tag_for_keyword(keyword))), keyword, column.vr, "")
    for keyword, column in STEP.items()
]


class WorklistRequest:
    """The keys of a worklist identifier: top level, and those of the step item."""

    def __init__(self, terms: list[str], keys: list[Key], step: list[Key] | None) -> None:
        self.terms = terms
        self.keys = keys
        # None: the request has no Scheduled Procedure Step Sequence.
        self.step = step

    def filters(self) -> list[tuple[matching.Column, Key]]:
        """The keys with a value that the orders hold, with their columns."""
        found = [(PROCEDURE.get(k.keyword), k) for k in self.keys]
        found += [(STEP.get(k.keyword), k) for k in self.step or []]
        return [(column, key) for column, key in found if column is not None and key.value]

    def ignored(self) -> list[str]:
        keys = [*self.keys, *(self.step or [])]
        return [
            k.keyword or str(k.tag)
            for k in keys
            if k.value and not k.is_sequence and k.keyword not in PROCEDURE | STEP
        ]

    def asks_status(self) -> bool:
        return any(k.keyword == STEP_STATUS and k.value for k in self.step or [])


def handle_worklist_find(event: evt.Event) -> Iterator[Response]:
    """EVT_C_FIND for the worklist model: a pending response per matching step."""
    close_old_connections()
    calling = str(event.assoc.requestor.ae_title).strip()
    if not access.rights_of(calling).allows(Operation.FIND):
        log.warning("worklist C-FIND from %s refused: not allowed to query", calling)
        yield _failure(statuses.NOT_AUTHORIZED, "this AE title may not query here")
        return
    try:
        request = read_request(event.identifier)
        condition = match_condition(request)
    except BadIdentifier as exc:
        log.warning("worklist C-FIND from %s refused (0x%04X): %s", calling, exc.status, exc)
        yield _failure(exc.status, str(exc))
        return
    except Exception:
        log.exception("worklist C-FIND from %s: the identifier cannot be decoded", calling)
        yield _failure(UNABLE_TO_PROCESS, "the identifier cannot be decoded")
        return
    ignored = request.ignored()
    if ignored:
        log.info("worklist C-FIND from %s: not matched on %s", calling, ", ".join(ignored))
    count = 0
    try:
        orders = visible_orders(principal_for_ae(calling)).filter(condition)
        if not request.asks_status():
            orders = orders.exclude(status__in=DONE)
        for order in orders.iterator(chunk_size=200):
            if event.is_cancelled:
                yield CANCEL, None
                return
            count += 1
            yield PENDING, response_identifier(request, order)
    except DatabaseError:
        log.exception("worklist C-FIND from %s failed", calling)
        yield _failure(UNABLE_TO_PROCESS, "worklist unavailable")
        return
    log.debug("worklist C-FIND from %s: %d scheduled steps", calling, count)


def read_request(identifier: Dataset) -> WorklistRequest:
    """The identifier's keys, the step item's keys decoded in the identifier's charset."""
    terms, keys = read_identifier(identifier)
    step: list[Key] | None = None
    for key in keys:
        if key.keyword != SCHEDULED_PROCEDURE_STEP_SEQUENCE:
            continue
        items = identifier[key.tag].value or []
        if len(items) > 1:
            raise BadIdentifier(
                IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                "ScheduledProcedureStepSequence must have at most one item",
            )
        step = []
        if items:
            item = Dataset()  # a copy, elements still raw: the request stays as received
            for elem in items[0].elements():
                item[elem.tag] = elem
            if any(terms):
                # Items use the character set of the data set they are in (PS3.5 7.5.1).
                item[SPECIFIC_CHARACTER_SET] = DataElement(SPECIFIC_CHARACTER_SET, "CS", terms)
            step = read_identifier(item)[1]
    return WorklistRequest(terms, keys, step)


def match_condition(request: WorklistRequest) -> Q:
    """AND of the conditions of every key with a value (PS3.4 C.2.2.2)."""
    options = matching.Options(case_insensitive_names=get_settings().query_case_insensitive_names)
    q = Q()
    for column, key in request.filters():
        try:
            condition = matching.condition(column, key.value, options)
        except matching.UnsupportedMatching as exc:
            raise BadIdentifier(
                IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{key.keyword}: {exc}"
            ) from exc
        if condition is not None:
            q &= condition
    return q


def response_identifier(request: WorklistRequest, order: Order) -> Dataset:
    """The requested keys with the order's values (empty where it holds none)."""
    texts: list[str] = []
    ds = _answer(request.keys, order, PROCEDURE, texts)
    for key in request.keys:
        if key.keyword == SCHEDULED_PROCEDURE_STEP_SEQUENCE:
            step_keys = request.step or ALL_STEP_KEYS
            item = _answer(step_keys, order, STEP, texts)
            ds.add(DataElement(key.tag, "SQ", Sequence([item])))
    charset = response_charset(texts, request.terms)
    if charset:
        ds.SpecificCharacterSet = charset
    return ds


def _answer(
    keys: list[Key], order: Order, columns: dict[str, matching.Column], texts: list[str]
) -> Dataset:
    ds = Dataset()
    for key in keys:
        if key.keyword == SCHEDULED_PROCEDURE_STEP_SEQUENCE:
            continue  # filled by the caller, from the item
        value: Any = []
        if not key.is_sequence:
            column = columns.get(key.keyword)
            value = getattr(order, column.path) if column else None
            if value:
                texts.append(value)
        ds.add(DataElement(key.tag, key.vr, value or ([] if key.is_sequence else None)))
    return ds
