"""Who is calling: the mTLS peer, the verified JWT and the API key, as rules see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envoykit.authz.request import Request
    from envoykit.core.spiffe import SpiffeId


@dataclass(slots=True)
class Identity:
    """The verified identity of a request. Only verified facts are set; nothing is partially trusted.

    Attributes:
        principal: the mTLS peer's principal (first URI SAN), ``""`` without mTLS.
        spiffe: the peer's :class:`SpiffeId` when ``principal`` is one.
        claims: the claims of a JWT whose signature, issuer, audience and times verified, else None.
        request_principal: ``<iss>/<sub>`` of that JWT (Istio's ``requestPrincipals`` form), else None.
        api_key: the configured name of the API key presented, else None.
    """

    principal: str = ""
    spiffe: SpiffeId | None = None
    claims: dict[str, Any] | None = None
    request_principal: str | None = None
    api_key: str | None = None
    issuer: str | None = field(default=None)

    @classmethod
    def anonymous(cls, req: Request) -> Identity:
        """The identity before any token is checked: only the mTLS peer (if any)."""
        return cls(principal=req.source_principal, spiffe=req.source_spiffe if req.source_principal else None)

    @property
    def authenticated(self) -> bool:
        """True when any credential verified: mTLS peer, JWT or API key."""
        return bool(self.principal or self.claims is not None or self.api_key)

    def claim(self, path: str, default: Any = None) -> Any:
        """A claim by dotted path (``realm_access.roles``), or ``default``."""
        cur: Any = self.claims
        for part in path.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur
