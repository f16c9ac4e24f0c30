"""Who is on the other side: the peer-metadata header (the contract both sides read).

The control plane writes it, the telemetry servers (ext_proc and access log) read it; it lives here once.

Each sidecar tells its peer who it is in one header, ``x-envoykit-peer``, set by the control plane
(overwriting whatever the app sent): on outbound requests (the client's labels, read by the server's
sidecar) and on inbound responses (the server's labels, read by the client's sidecar). The value is
comma-separated ``key=value`` pairs with the node-metadata keys of :data:`PEER_KEYS`::

    x-envoykit-peer: workload=frontend-v1,app=frontend,version=v1,namespace=default,service_account=frontend

It plays the part of Istio's metadata exchange (``x-envoy-peer-metadata``) in plain text. It labels
telemetry only: a reporter that sees a verified peer certificate takes the principal from it.
"""

from __future__ import annotations

from functools import lru_cache

from envoykit.core.spiffe import peer_spiffe_id

PEER_HEADER = "x-envoykit-peer"
#: Node-metadata keys carried in the header, in this order (``envoykit.control.model.nodes``).
PEER_KEYS = ("workload", "app", "version", "namespace", "service_account", "principal", "mesh_id")


@lru_cache(maxsize=1024)
def parse_peer(value: str) -> dict[str, str]:
    """``"workload=a,app=b"`` → ``{"workload": "a", "app": "b"}``; unknown keys and junk are dropped.

    Cached: a mesh has few distinct peers, so the same header value comes back again and again.
    Callers must not mutate the returned dict.
    """
    out: dict[str, str] = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        key = key.strip()
        if sep and key in PEER_KEYS and val.strip():
            out[key] = val.strip()
    return out


def format_peer(meta: dict[str, str]) -> str:
    """The header value for ``meta`` (the inverse of :func:`parse_peer`), keys in :data:`PEER_KEYS` order."""
    return ",".join(f"{k}={meta[k]}" for k in PEER_KEYS if meta.get(k))


def spiffe_parts(principal: str) -> tuple[str, str]:
    """``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` → ``(namespace, service account)``;
    empty strings when ``principal`` is not a valid SPIFFE ID of that shape (:mod:`envoykit.core.spiffe`)."""
    sid = peer_spiffe_id(principal)
    if sid is None:
        return "", ""
    return sid.namespace or "", sid.service_account or ""
