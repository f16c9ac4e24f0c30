"""Per-node tokens of the xDS channel (envoykit.control.xds.tokens)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from envoykit.control.xds.tokens import NodeTokens


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
