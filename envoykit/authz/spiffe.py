"""SPIFFE IDs as the authz server sees them.

Envoy's ``source.principal`` / ``destination.principal`` is the first URI SAN of the peer certificate
*whatever its scheme* (``envoy.service.auth.v3.AttributeContext.Peer.principal``), so a rule must not
assume it is a SPIFFE ID: :func:`parse_spiffe_id` checks the scheme and shape (SPIFFE ID spec, section 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# SPIFFE ID spec 2.1: trust domain is lower-case letters, digits, '.', '-', '_'.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
# SPIFFE ID spec 2.2: path segments of letters, digits, '.', '-', '_'; no '.' or '..' segments.
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed ``spiffe://<trust_domain>/<path>`` identity.

    ``namespace`` and ``service_account`` are filled when the path has Istio's shape
    ``/ns/<namespace>/sa/<service-account>``, else ``None``.
    """

    trust_domain: str
    path: str
    namespace: str | None = None
    service_account: str | None = None

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"


def parse_spiffe_id(value: str) -> SpiffeId | None:
    """Parse ``value`` as a SPIFFE ID; ``None`` when it is anything else (another URI scheme, bad shape)."""
    if not value.startswith("spiffe://"):
        return None
    rest = value[len("spiffe://") :]
    domain, slash, path = rest.partition("/")
    if not domain or not _TRUST_DOMAIN.match(domain) or "?" in rest or "#" in rest:
        return None
    path = slash + path
    if path in ("", "/"):
        return SpiffeId(domain, "")
    segments = path[1:].split("/")
    if any(not _SEGMENT.match(s) or s in (".", "..") for s in segments):
        return None
    ns = sa = None
    if len(segments) == 4 and segments[0] == "ns" and segments[2] == "sa":
        ns, sa = segments[1], segments[3]
    return SpiffeId(domain, path, ns, sa)
