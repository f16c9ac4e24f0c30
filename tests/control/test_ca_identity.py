"""Unit tests of SPIFFE IDs and per-node tokens."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from envoykit.control.pki.spiffe import InvalidSpiffeId, parse_spiffe_id, spiffe_id, validate_trust_domain
from envoykit.control.xds.tokens import NodeTokens


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


def test_node_tokens(tmp_path: Path) -> None:
    tokens = NodeTokens(tmp_path)
    a = tokens.token_for("sidecar-a")
    assert len(a) >= 40 and a == tokens.token_for("sidecar-a")
    assert tokens.token_for("sidecar-b") != a
    assert tokens.verify("sidecar-a", a)
    assert not tokens.verify("sidecar-b", a)  # a node cannot use another node's token
    assert not tokens.verify("sidecar-a", a[:-1] + ("A" if a[-1] != "A" else "B"))
    assert not tokens.verify("sidecar-a", "") and not tokens.verify("sidecar-a", None)
    key = tmp_path / NodeTokens.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "key" not in repr(tokens).lower() or str(tmp_path) in repr(tokens)
    # another process sharing the state dir derives the same token
    assert NodeTokens(tmp_path).verify("sidecar-a", a)
    tokens.rotate()
    assert not NodeTokens(tmp_path).verify("sidecar-a", a)
    with pytest.raises(ValueError, match="empty"):
        tokens.token_for("")


def test_node_token_key_must_be_private(tmp_path: Path) -> None:
    NodeTokens(tmp_path).token_for("n")
    (tmp_path / NodeTokens.KEY_FILE).chmod(0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        NodeTokens(tmp_path).token_for("n")
