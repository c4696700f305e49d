"""Remote DICOM nodes: model validation and the services the CLI, API and admin share."""

from __future__ import annotations

import socket
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from noctispro.accounts import nodes
from noctispro.accounts.models import DEFAULT_OPERATIONS, Operation, RemoteNode
from noctispro.accounts.services import add_facility

pytestmark = pytest.mark.django_db


def add(name: str = "ws1", **kw) -> RemoteNode:
    kw.setdefault("ae_title", name.upper())
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("port", 11113)
    return nodes.add_node(name, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "-ws"),
        ("name", "a b"),
        ("name", "a/b"),
        ("name", "x" * 65),
        ("ae_title", ""),
        ("ae_title", "A" * 17),
        ("ae_title", "BACK\\SLASH"),
        ("ae_title", "TAB\tAE"),
        ("host", ""),
        ("host", "10.0.0.300"),
        ("host", "-lead.example.org"),
        ("host", "trail-.example.org"),
        ("host", "a..b"),
        ("host", "has space"),
        ("host", "x" * 64 + ".org"),
        ("host", "http://pacs"),
        ("port", 0),
        ("port", 65536),
        ("port", -1),
    ],
)
def test_invalid_input_is_refused_and_names_the_field(field: str, value: object) -> None:
    kw: dict = {"ae_title": "WS1", "host": "127.0.0.1", "port": 104}
    name = "ws1"
    if field == "name":
        name = str(value)
    else:
        kw[field] = value
    with pytest.raises(ValidationError) as info:
        nodes.add_node(name, **kw)
    assert field in info.value.message_dict
    assert not RemoteNode.objects.exists()


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("2001:DB8:0:0::0001", "2001:db8::1"),
        ("PACS.Example.ORG", "pacs.example.org"),
        ("pacs_main", "pacs_main"),
        ("localhost", "localhost"),
        (" pacs ", "pacs"),
    ],
)
def test_hosts_are_accepted_and_normalised(given: str, stored: str) -> None:
    assert add(host=given).host == stored


def test_ae_title_is_stripped_and_port_bounds_are_inclusive() -> None:
    low = add("low", ae_title="  LOW ", port=1)
    high = add("high", port=65535)
    assert (low.ae_title, low.port, high.port) == ("LOW", 1, 65535)


def test_the_database_refuses_a_port_out_of_range_too() -> None:
    node = RemoteNode(name="raw", ae_title="RAW", host="h", port=70000)
    with pytest.raises(IntegrityError), transaction.atomic():
        node.save()


# --- operations ---------------------------------------------------------------------


def test_a_node_may_only_store_unless_told_otherwise() -> None:
    node = add()
    assert {Operation.STORE} == DEFAULT_OPERATIONS
    assert node.allowed_operations == [Operation.STORE]
    assert node.allows("store")
    assert not node.allows(Operation.FIND)
    assert not node.allows("move")
    assert not node.allows("get")


def test_operations_are_stored_as_given_in_canonical_order() -> None:
    node = add(operations=nodes.parse_operations(["get", "FIND", " move "]))
    node.refresh_from_db()
    assert node.allowed_operations == ["find", "move", "get"]
    assert add("none", operations=nodes.parse_operations(["none"])).allowed_operations == []


def test_unknown_operations_are_named() -> None:
    with pytest.raises(ValueError, match="delete"):
        nodes.parse_operations(["store", "delete"])


# --- services -------------------------------------------------------------------------


def test_add_list_get_remove() -> None:
    add("b", description="  Reading room 2 ")
    add("a")
    assert [n.name for n in nodes.list_nodes()] == ["a", "b"]
    assert nodes.get_node("b").description == "Reading room 2"
    nodes.remove_node("a")
    assert [n.name for n in nodes.list_nodes()] == ["b"]
    with pytest.raises(nodes.UnknownNode):
        nodes.remove_node("a")
    with pytest.raises(nodes.UnknownNode):
        nodes.get_node("a")


def test_a_duplicate_name_or_ae_title_is_a_conflict_not_invalid_input() -> None:
    add("ws1", ae_title="WS1")
    with pytest.raises(nodes.NodeConflict, match="named 'ws1'"):
        add("ws1", ae_title="OTHER")
    # The same AE title on another host would make C-MOVE destinations ambiguous.
    with pytest.raises(nodes.NodeConflict, match="used by node 'ws1'"):
        add("ws2", ae_title="WS1", host="10.0.0.2")
    assert RemoteNode.objects.count() == 1


def test_a_racing_duplicate_is_a_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    add("ws1")
    monkeypatch.setattr(nodes, "_refuse_duplicates", lambda node: None)
    with pytest.raises(nodes.NodeConflict):
        add("ws1", ae_title="OTHER")


def test_facility_link() -> None:
    north = add_facility("NORTH", "North clinic")
    node = add(facility_code="NORTH")
    assert node.facility == north
    assert list(north.nodes.all()) == [node]
    assert add("nofac").facility is None
    with pytest.raises(ValidationError) as info:
        add("ws9", facility_code="NOPE")
    assert "no such facility 'NOPE'" in str(info.value.message_dict["facility"])
    # A facility with nodes is not deleted from under them.
    with pytest.raises(ProtectedError):
        north.delete()


def test_an_ae_title_owned_by_one_facility_cannot_act_for_another() -> None:
    add_facility("NORTH", "North clinic", ["NORTH_CT"])
    add_facility("SOUTH", "South clinic")
    with pytest.raises(ValidationError) as info:
        add("ct", ae_title="NORTH_CT", facility_code="SOUTH")
    assert "sender of facility 'NORTH'" in str(info.value.message_dict["facility"])
    assert add("ct", ae_title="NORTH_CT", facility_code="NORTH").facility is not None


def test_node_for_ae_title() -> None:
    node = add("ws1", ae_title="WS1")
    assert nodes.node_for_ae_title("WS1 ") == node
    assert nodes.node_for_ae_title("ws1") is None  # AE titles are case-sensitive
    assert nodes.node_for_ae_title("NOBODY") is None


def test_field_problems_of_a_plain_error() -> None:
    assert nodes.field_problems(ValidationError("whole")) == [("", "whole")]


# --- echo without a peer ------------------------------------------------------------


def test_echo_to_a_closed_port_fails_fast_and_says_why() -> None:
    node = add(port=closed_port())
    start = time.monotonic()
    result = nodes.echo_node(node)
    assert time.monotonic() - start < 2
    assert not result.ok
    assert result.status is None
    assert "refused or unreachable" in result.detail


def test_echo_to_an_unresolvable_host_says_so() -> None:
    node = add(host="no-such-host.invalid")
    result = nodes.echo_node(node)
    assert not result.ok
    assert "cannot resolve 'no-such-host.invalid'" in result.detail


# --- Django admin ---------------------------------------------------------------------


# WhiteNoise warns that the static files are not collected; the admin works without them.
no_static_warning = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")


@no_static_warning
def test_admin_lists_searches_and_filters_by_facility(admin_client) -> None:
    north = add_facility("NORTH", "North clinic")
    add("northws", facility_code="NORTH", description="Reading room")
    add("loose")
    page = admin_client.get("/admin/accounts/remotenode/")
    assert page.status_code == 200
    assert b"northws" in page.content and b"loose" in page.content
    found = admin_client.get("/admin/accounts/remotenode/", {"q": "reading"})
    assert b"northws" in found.content and b"loose" not in found.content
    filtered = admin_client.get("/admin/accounts/remotenode/", {"facility__id__exact": north.pk})
    assert b"northws" in filtered.content and b"loose" not in filtered.content


@no_static_warning
def test_admin_add_form_validates_like_the_services(admin_client) -> None:
    add("ws1", ae_title="WS1")
    form = {"name": "ws2", "ae_title": "WS1", "host": "10.0.0.300", "port": "0"}
    page = admin_client.post("/admin/accounts/remotenode/add/", form)
    assert page.status_code == 200  # the form again, with errors
    errors = page.context["adminform"].form.errors
    assert set(errors) == {"ae_title", "host", "port"}
    form = {"name": "ws2", "ae_title": " WS2 ", "host": "PACS.example.org", "port": "104"}
    assert admin_client.post("/admin/accounts/remotenode/add/", form).status_code == 302
    node = nodes.get_node("ws2")
    assert (node.ae_title, node.host, node.allowed_operations) == ("WS2", "pacs.example.org", [])


@pytest.mark.django_db
def test_a_facility_cannot_claim_the_ae_title_of_another_facilitys_node() -> None:
    add_facility("NORTH", "North")
    nodes.add_node("ct1", ae_title="CT1", host="10.0.0.5", port=104, facility_code="NORTH")
    with pytest.raises(ValidationError, match="node 'ct1'"):
        add_facility("SOUTH", "South", ["CT1"])
