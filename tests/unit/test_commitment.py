"""Storage commitment's check of what is really stored (core/commitment.py, PS3.4 J.3)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from noctispro.accounts.facilities import forget_cached_facilities
from noctispro.accounts.scoping import Principal
from noctispro.accounts.services import add_facility
from noctispro.core.commitment import Reference, Verdict, check_stored
from noctispro.core.ingest import Origin, store_instance
from noctispro.index.models import Instance
from noctispro.storage import get_blob_store
from tests.factories import make_ct, to_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean(storage_root: Path) -> Iterator[None]:
    forget_cached_facilities()
    yield
    forget_cached_facilities()
    for p in storage_root.glob("??/??/*.dcm"):
        p.unlink()


def _store(calling_ae: str, **fields: object) -> Instance:
    result = store_instance(
        io.BytesIO(to_bytes(make_ct(**fields))),  # type: ignore[arg-type]
        Origin(channel="test", calling_ae_title=calling_ae),
    )
    return Instance.objects.get(sop_instance_uid=result.sop_instance_uid)


def test_each_reference_gets_its_verdict(storage_root):
    west = add_facility("WEST", "West", ["WEST_CT"])
    add_facility("EAST", "East", ["EAST_CT"])
    good, deleted, truncated, flipped = (_store("WEST_CT", seed=n) for n in range(4))
    east = _store("EAST_CT")
    store = get_blob_store()
    store.delete(deleted.storage_key)
    path = storage_root / truncated.storage_key
    path.write_bytes(path.read_bytes()[:-10])
    path = storage_root / flipped.storage_key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    missing = generate_uid()

    refs = [
        Reference(CTImageStorage, good.sop_instance_uid),
        Reference(CTImageStorage, missing),
        Reference(MRImageStorage, good.sop_instance_uid),
        Reference(CTImageStorage, deleted.sop_instance_uid),
        Reference(CTImageStorage, truncated.sop_instance_uid),
        Reference(CTImageStorage, flipped.sop_instance_uid),
        Reference(CTImageStorage, east.sop_instance_uid),
    ]
    checks = check_stored(Principal("west", frozenset({west.pk})), refs)
    assert [c.reference for c in checks] == refs
    assert [c.verdict for c in checks] == [
        Verdict.STORED,
        Verdict.NO_SUCH_INSTANCE,
        Verdict.CLASS_INSTANCE_CONFLICT,
        Verdict.DAMAGED,
        Verdict.DAMAGED,
        Verdict.DAMAGED,
        Verdict.NO_SUCH_INSTANCE,  # another facility's: not there for this requester
    ]
    assert "missing" in checks[3].detail
    assert "bytes" in checks[4].detail
    assert "SHA-256" in checks[5].detail
    # Seen by every facility, the East instance is there.
    everyone = check_stored(Principal("all", None), [refs[-1]])
    assert [c.verdict for c in everyone] == [Verdict.STORED]
