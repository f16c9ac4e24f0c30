"""Who is on the other side: the ``x-envoykit-peer`` header and SPIFFE IDs.

The contract lives in :mod:`envoykit.core.peer` (the control plane writes it, the telemetry servers read
it); this module re-exports it for the ext_proc telemetry.
"""

from envoykit.core.peer import PEER_HEADER, PEER_KEYS, format_peer, parse_peer, spiffe_parts

__all__ = ["PEER_HEADER", "PEER_KEYS", "format_peer", "parse_peer", "spiffe_parts"]
