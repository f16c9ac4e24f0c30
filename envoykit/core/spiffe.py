"""Workload identity: SPIFFE IDs, parsed one way by everyone (the contract the mesh's two sides read).

The control plane builds and checks them (CA, mesh model, mTLS config); the authz server and the
telemetry read a peer's principal with the same rules. Public API::

    spiffe_id("mesh.local", "default", "orders")  -> "spiffe://mesh.local/ns/default/sa/orders"
    parse_spiffe_id(text) -> SpiffeId            # raises InvalidSpiffeId (configuration: say why)
    peer_spiffe_id(text) -> SpiffeId | None      # a peer's principal: None when it is not a SPIFFE ID
    validate_trust_domain(text) -> str           # raises InvalidSpiffeId

SPIFFE IDs follow the SPIFFE-ID specification (github.com/spiffe/spiffe, standards/SPIFFE-ID.md,
section 2): ``spiffe://<trust domain><path>``; the trust domain is lowercase letters, digits, ``.``, ``-``
and ``_``; path segments are letters, digits, ``.``, ``-`` and ``_``, never empty, ``.`` or ``..``; no
query, fragment, port or user info; at most 2048 bytes. Workload identities use Istio's path shape
``/ns/<namespace>/sa/<service account>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_MAX_ID_LEN = 2048  # SPIFFE-ID spec 2.3: URIs longer than 2048 bytes are not valid SPIFFE IDs.
_MAX_TD_LEN = 255  # SPIFFE-ID spec 2.1: trust domain at most 255 characters.
_TD_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")


class InvalidSpiffeId(ValueError):
    """Text that is not a valid SPIFFE ID or trust domain; the message says which rule it breaks."""


@dataclass(frozen=True, slots=True)
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


@lru_cache(maxsize=1024)
def peer_spiffe_id(principal: str) -> SpiffeId | None:
    """A peer's principal as a :class:`SpiffeId`, or ``None`` when it is not a valid SPIFFE ID.

    Envoy's ``source.principal`` (``envoy.service.auth.v3.AttributeContext.Peer.principal``) and the
    ``uri_san_peer_certificate`` attribute are the first URI SAN of the peer certificate *whatever its
    scheme*, so a server must not assume a SPIFFE ID; the rules are those of :func:`parse_spiffe_id`.
    Cached: a mesh has few distinct peers.
    """
    try:
        return parse_spiffe_id(principal)
    except InvalidSpiffeId:
        return None
