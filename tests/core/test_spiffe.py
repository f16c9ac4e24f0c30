"""SPIFFE IDs (envoykit.core.spiffe): the one set of rules the control plane, authz and telemetry share."""

from __future__ import annotations

import pytest

from envoykit.core.peer import spiffe_parts
from envoykit.core.spiffe import (
    InvalidSpiffeId,
    parse_spiffe_id,
    peer_spiffe_id,
    spiffe_id,
    validate_trust_domain,
)


def test_spiffe_id_of_a_service_account() -> None:
    sid = spiffe_id("mesh.local", "default", "orders")
    assert sid == "spiffe://mesh.local/ns/default/sa/orders"
    parsed = parse_spiffe_id(sid)
    assert (parsed.trust_domain, parsed.path) == ("mesh.local", "/ns/default/sa/orders")
    assert (parsed.namespace, parsed.service_account) == ("default", "orders")
    assert str(parsed) == sid
    other = parse_spiffe_id("spiffe://td/workload/x")
    assert other.namespace is None and other.service_account is None
    assert parse_spiffe_id("spiffe://td").path == ""


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://mesh.local/ns/a/sa/b", "spiffe://"),
        ("SPIFFE://mesh.local/ns/a/sa/b", "spiffe://"),
        ("spiffe://Mesh.local/ns/a", "lowercase"),
        ("spiffe://mesh.local:8080/ns/a", "port"),
        ("spiffe://user@mesh.local/ns/a", "user info"),
        ("spiffe://mesh.local/ns/a/", "path segment"),
        ("spiffe://mesh.local/ns//a", "path segment"),
        ("spiffe://mesh.local/ns/../a", "path segment"),
        ("spiffe://mesh.local/ns/a?x=1", "query"),
        ("spiffe://mesh.local/ns/a#f", "fragment"),
        ("spiffe://mesh.local/ns/a b", "letters, digits"),
        ("spiffe:///ns/a", "empty"),
        ("spiffe://mesh.local/" + "a" * 2048, "2048"),
    ],
)
def test_invalid_spiffe_ids_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=why):
        parse_spiffe_id(text)


def test_invalid_parts_of_a_workload_id() -> None:
    with pytest.raises(InvalidSpiffeId, match="namespace"):
        spiffe_id("mesh.local", "", "orders")
    with pytest.raises(InvalidSpiffeId, match="service account"):
        spiffe_id("mesh.local", "default", "a/b")
    with pytest.raises(InvalidSpiffeId, match="255"):
        validate_trust_domain("a" * 256)


# Edge cases of the SPIFFE-ID spec (github.com/spiffe/spiffe, standards/SPIFFE-ID.md, section 2).
VALID = [
    "spiffe://td",  # the trust domain's own ID: no path
    "spiffe://trust-domain.example_1/ns/a/sa/b",
    "spiffe://td/.a/a.b/-/_",  # dots are fine inside a segment, only "." and ".." are not
    "spiffe://td/A/Z",  # path segments may hold upper case; the trust domain may not
    "spiffe://" + "a" * 255,  # longest trust domain
    "spiffe://td/" + "a" * (2048 - len("spiffe://td/")),  # exactly 2048 bytes
]
INVALID = [
    "",
    "spiffe",
    "spiffe://",
    "spiffe:td/ns/a",
    "spiffe:/td/ns/a",
    "Spiffe://td/ns/a",
    "spiffe://td/",  # trailing slash
    "spiffe://td/ns/a/",
    "spiffe://td//a",
    "spiffe://td/./a",
    "spiffe://td/a/..",
    "spiffe://td/%41",  # percent-encoding is not allowed
    "spiffe://td/a\n",
    "spiffe://td\n/a",
    "spiffe://td/a b",
    "spiffe://td/é",
    "spiffe://tD/a",
    "spiffe://td:443/a",
    "spiffe://u@td/a",
    "spiffe://td/a?b",
    "spiffe://td/a#b",
    "spiffe://" + "a" * 256,
    "spiffe://td/" + "a" * (2049 - len("spiffe://td/")),
    " spiffe://td/a",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_edge_cases(text: str) -> None:
    assert str(parse_spiffe_id(text)) == text
    assert peer_spiffe_id(text) == parse_spiffe_id(text)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_edge_cases(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_spiffe_id(text)
    assert peer_spiffe_id(text) is None  # a server reading a peer's principal gets None, never an error


def test_istio_shape_only_when_the_path_is_exactly_ns_sa() -> None:
    assert spiffe_parts("spiffe://td/ns/shop/sa/web") == ("shop", "web")
    for other in ("spiffe://td/x/ns/shop/sa/web", "spiffe://td/ns/shop/sa/web/x", "spiffe://td/ns/shop"):
        sid = parse_spiffe_id(other)
        assert (sid.namespace, sid.service_account) == (None, None)
        assert spiffe_parts(other) == ("", "")
    assert spiffe_parts("spiffe://td/ns/shop/sa/web/") == ("", "")  # not a SPIFFE ID at all
