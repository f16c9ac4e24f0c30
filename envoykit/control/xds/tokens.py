"""Node tokens: the per-node credentials of the xDS channel.

Public API::

    NodeTokens(state_dir).token_for(node_id) -> str
    NodeTokens(state_dir).verify(node_id, token) -> bool

The control plane hands each Envoy a token in its bootstrap (gRPC ``initial_metadata`` header
:data:`NODE_TOKEN_HEADER`) and checks it on every ADS stream, so a node can only ask for the secrets of
the identity the mesh gives to its node ID. A token is HMAC-SHA256(node key, node ID): the key lives in
``<state_dir>/node-token.key`` (mode 0600), so every process sharing the state directory (``envoykit
bootstrap``, the control plane) derives and checks the same tokens without a token table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from envoykit.control.pki.keyfiles import read_private, write_private

#: gRPC metadata header carrying a node's token on its ADS stream.
NODE_TOKEN_HEADER = "x-envoykit-node-token"


class NodeTokens:
    """Per-node credentials for the ADS channel, derived from one secret key in the state directory.

    Args:
        state_dir: the mesh's state directory; the key is ``<state_dir>/node-token.key`` (created with mode
            0600 on first use, 32 random bytes).

    The token of a node is ``base64url(HMAC-SHA256(key, node_id))`` without padding (43 characters).
    :meth:`rotate` replaces the key, which revokes every token handed out so far.
    """

    KEY_FILE = "node-token.key"

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / self.KEY_FILE
        self._key: bytes | None = None

    def __repr__(self) -> str:  # never show the key
        return f"NodeTokens({str(self.path.parent)!r})"

    def _load_key(self) -> bytes:
        if self._key is None:
            if self.path.exists():
                key = read_private(self.path)
                if len(key) < 32:
                    raise ValueError(f"{self.path}: node token key is shorter than 32 bytes")
            else:
                key = secrets.token_bytes(32)
                write_private(self.path, key, exclusive=True)
                # another process may have won the race: use whatever is on disk
                key = read_private(self.path)
            self._key = key
        return self._key

    def token_for(self, node_id: str) -> str:
        """The token for ``node_id`` (put it in the node's bootstrap).

        Raises:
            ValueError: ``node_id`` is empty.
        """
        if not node_id:
            raise ValueError("node ID is empty")
        mac = hmac.new(self._load_key(), node_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def verify(self, node_id: str, token: str | None) -> bool:
        """True if ``token`` is the token of ``node_id`` (constant-time ``hmac.compare_digest``)."""
        if not node_id or not token:
            return False
        return hmac.compare_digest(self.token_for(node_id).encode(), token.encode())

    def rotate(self) -> None:
        """Replace the key with a new random one: every earlier token stops verifying."""
        write_private(self.path, secrets.token_bytes(32))
        self._key = None
