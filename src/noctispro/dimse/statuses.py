"""DIMSE status codes for ingest outcomes (PS3.4 B.2.3, PS3.7 C)."""

from __future__ import annotations

from noctispro.core.ingest import Rejection

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000

STORE_STATUS_FOR_REJECTION: dict[Rejection, int] = {
    Rejection.NOT_DICOM: CANNOT_UNDERSTAND,
    Rejection.MALFORMED: CANNOT_UNDERSTAND,
    Rejection.TRUNCATED: CANNOT_UNDERSTAND,
    Rejection.TOO_DEEP: CANNOT_UNDERSTAND,
    Rejection.TOO_LARGE: OUT_OF_RESOURCES,
    Rejection.OUT_OF_RESOURCES: OUT_OF_RESOURCES,
    Rejection.MISSING_UID: DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    Rejection.INVALID_UID: DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    Rejection.INDEX_CONFLICT: DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    Rejection.FACILITY_CONFLICT: NOT_AUTHORIZED,
    Rejection.DUPLICATE_REJECTED: DUPLICATE_SOP_INSTANCE,
}


def error_comment(message: str) -> str:
    """Error Comment (0000,0902) is LO: at most 64 characters, no backslash."""
    return message.replace("\\", "/")[:64]
