"""Workload identity: SPIFFE IDs and the per-node credentials of the xDS channel.

Public API::

    spiffe_id("mesh.local", "default", "orders")  -> "spiffe://mesh.local/ns/default/sa/orders"
    parse_spiffe_id(text) -> SpiffeId            # raises InvalidSpiffeId
    validate_trust_domain(text) -> str           # raises InvalidSpiffeId
    NodeTokens(state_dir).token_for(node_id) -> str
    NodeTokens(state_dir).verify(node_id, token) -> bool

SPIFFE IDs follow the SPIFFE-ID specification (github.com/spiffe/spiffe, standards/SPIFFE-ID.md,
section 2): ``spiffe://<trust domain><path>``; the trust domain is lowercase letters, digits, ``.``, ``-``
and ``_``; path segments are letters, digits, ``.``, ``-`` and ``_``, never empty, ``.`` or ``..``; no
query, fragment, port or user info; at most 2048 bytes. Workload identities use Istio's path shape
``/ns/<namespace>/sa/<service account>``.

Node tokens: the control plane hands each Envoy a token in its bootstrap (gRPC ``initial_metadata``
header :data:`NODE_TOKEN_HEADER`) and checks it on every ADS stream, so a node can only ask for the
secrets of the identity the mesh gives to its node ID. A token is HMAC-SHA256(node key, node ID): the
key lives in ``<state_dir>/node-token.key`` (mode 0600), so every process sharing the state directory
(``envoykit bootstrap``, the control plane) derives and checks the same tokens without a token table.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

#: gRPC metadata header carrying a node's token on its ADS stream.
NODE_TOKEN_HEADER = "x-envoykit-node-token"

_MAX_ID_LEN = 2048  # SPIFFE-ID spec 2.3: URIs longer than 2048 bytes are not valid SPIFFE IDs.
_MAX_TD_LEN = 255  # SPIFFE-ID spec 2.1: trust domain at most 255 characters.
_TD_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 (parent made 0700), atomically by rename.

    With ``exclusive`` an existing file is left alone (first writer wins). Used for every key file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if exclusive and path.exists():
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if exclusive:
            with contextlib.suppress(FileExistsError):  # another process created it meanwhile
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_private(path: Path) -> bytes:
    """Read a key file, refusing one that group or others may read (it would have leaked).

    Raises:
        PermissionError: the file's mode allows access beyond its owner.
    """
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path}: mode {mode:o} lets others read a private key; chmod 600 it")
    return path.read_bytes()


class InvalidSpiffeId(ValueError):
    """Text that is not a valid SPIFFE ID or trust domain; the message says which rule it breaks."""


@dataclass(frozen=True)
class SpiffeId:
    """A parsed SPIFFE ID.

    Attributes:
        trust_domain: e.g. ``mesh.local``.
        path: e.g. ``/ns/default/sa/orders`` (empty for the trust domain's own ID).
    """

    trust_domain: str
    path: str

    @property
    def uri(self) -> str:
        """The ID as text: ``spiffe://<trust domain><path>``."""
        return f"spiffe://{self.trust_domain}{self.path}"

    @property
    def namespace(self) -> str | None:
        """The namespace of an Istio-shaped ID (``/ns/<ns>/sa/<sa>``), else ``None``."""
        parts = self.path.split("/")
        return parts[2] if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" else None

    @property
    def service_account(self) -> str | None:
        """The service account of an Istio-shaped ID (``/ns/<ns>/sa/<sa>``), else ``None``."""
        parts = self.path.split("/")
        return parts[4] if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" else None

    def __str__(self) -> str:
        return self.uri


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain name (SPIFFE-ID spec 2.1).

    Raises:
        InvalidSpiffeId: empty, too long, or characters other than ``a-z 0-9 . - _``.
    """
    if not trust_domain:
        raise InvalidSpiffeId("trust domain is empty")
    if len(trust_domain) > _MAX_TD_LEN:
        raise InvalidSpiffeId(f"trust domain longer than {_MAX_TD_LEN} characters")
    if not _TD_RE.fullmatch(trust_domain):
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} may only hold lowercase letters, digits, '.', '-' and '_'"
        )
    return trust_domain


def _validate_segment(segment: str, what: str) -> None:
    if segment in ("", ".", ".."):
        raise InvalidSpiffeId(f"{what} {segment!r} is not a valid path segment (empty, '.' or '..')")
    if not _SEGMENT_RE.fullmatch(segment):
        raise InvalidSpiffeId(f"{what} {segment!r} may only hold letters, digits, '.', '-' and '_'")


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse and validate a SPIFFE ID (SPIFFE-ID spec section 2).

    Returns:
        the :class:`SpiffeId`.

    Raises:
        InvalidSpiffeId: wrong scheme, bad trust domain, port/user info/query/fragment, bad path segment,
            trailing slash, or longer than 2048 bytes.
    """
    if len(text.encode()) > _MAX_ID_LEN:
        raise InvalidSpiffeId(f"SPIFFE ID longer than {_MAX_ID_LEN} bytes")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != "spiffe":
        raise InvalidSpiffeId(f"{text!r} does not start with 'spiffe://'")
    if "?" in rest or "#" in rest:
        raise InvalidSpiffeId(f"{text!r} has a query or fragment")
    authority, slash, path = rest.partition("/")
    if "@" in authority or ":" in authority:
        raise InvalidSpiffeId(f"{text!r} has user info or a port in its trust domain")
    validate_trust_domain(authority)
    if not slash:
        return SpiffeId(authority, "")
    for seg in path.split("/"):
        _validate_segment(seg, "path segment")
    return SpiffeId(authority, "/" + path)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The workload SPIFFE ID ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` (Istio's shape).

    Raises:
        InvalidSpiffeId: one of the parts is not valid.
    """
    validate_trust_domain(trust_domain)
    _validate_segment(namespace, "namespace")
    _validate_segment(service_account, "service account")
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


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
