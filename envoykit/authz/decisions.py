"""What a rule may answer: :func:`allow` (with upstream mutations) or :func:`deny` (with a response)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the request through, optionally changing what the upstream receives.

    Attributes:
        headers: headers to set on the upstream request (overwrite if present), name → value.
        remove_headers: header names to remove from the upstream request.
        metadata: dynamic metadata for the ``envoy.filters.http.ext_authz`` namespace (JSON-like values);
            Envoy's ``OkHttpResponse.dynamic_metadata``.
        response_headers: headers added to the response sent back to the client
            (``OkHttpResponse.response_headers_to_add``).
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    response_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse the request: Envoy answers the client with ``status``, ``body`` and ``headers``.

    ``status`` is an HTTP status code (Envoy's ``DeniedHttpResponse.status``); 401 and 403 are usual.
    """

    status: int = 403
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


Decision = Allow | Deny


def allow(
    headers: Mapping[str, str] | None = None,
    *,
    remove_headers: tuple[str, ...] | list[str] = (),
    metadata: Mapping[str, Any] | None = None,
    response_headers: Mapping[str, str] | None = None,
) -> Allow:
    """An :class:`Allow`; header names are lower-cased."""
    # Every field passed: a rule may call this on every Check, and the dataclass's default
    # factories and generator expressions cost more than the answer itself.
    return Allow(
        {k.lower(): v for k, v in headers.items()} if headers else {},
        tuple([h.lower() for h in remove_headers]) if remove_headers else (),
        dict(metadata) if metadata else {},
        {k.lower(): v for k, v in response_headers.items()} if response_headers else {},
    )


def deny(status: int = 403, body: str = "", headers: Mapping[str, str] | None = None) -> Deny:
    """A :class:`Deny` answering ``status`` (100..599) with ``body`` and ``headers``.

    Raises:
        ValueError: ``status`` is not an HTTP status code.
    """
    if not 100 <= status <= 599:
        raise ValueError(f"deny status must be an HTTP status code, got {status}")
    return Deny(status=status, body=body, headers={k.lower(): v for k, v in (headers or {}).items()})
