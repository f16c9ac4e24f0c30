"""The last check before a mesh version is served: never an empty or nearly empty mesh.

A file truncated by an editor, a ``: > mesh.yaml`` or a half-written copy can still be valid YAML and
a valid model (every list is optional) — yet pushing it would remove every listener of a running
mesh. So an accepted version must have services and Envoys, every node must have listeners, and a
node whose Envoy is connected must stay in the mesh and keep routes if it had some. Anything else is refused whole (the running
version is kept), like any other invalid change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoykit.control.translate.translation import NodeConfig, Translation
from envoykit.control.xds.type_urls import LISTENER, ROUTE
from envoykit.core.errors import ConfigError

_KEEP = "an empty or truncated mesh is never served"


def check_not_empty(translation: Translation, file: str | None = None) -> None:
    """Refuse a mesh with no services, no nodes (Envoys), or a node without listeners.

    Raises:
        ConfigError: naming ``file`` and what is missing.
    """
    if not translation.mesh.services:
        raise ConfigError(f"the mesh has no services ({_KEEP})", file=file, field="services")
    if not translation.nodes:
        raise ConfigError(f"the mesh has no Envoys: no sidecars and no gateways ({_KEEP})", file=file)
    for nid, cfg in translation.nodes.items():
        if not cfg.resources(LISTENER):
            raise ConfigError(f"node {nid} would have no listeners ({_KEEP})", file=file)


def _virtual_hosts(cfg: NodeConfig) -> int:
    return sum(len(rc.virtual_hosts) for rc in cfg.resources(ROUTE).values())  # type: ignore[attr-defined]


def virtual_hosts(translation: Translation) -> dict[str, int]:
    """Virtual hosts each node serves (all its RouteConfigurations), by node id."""
    return {nid: _virtual_hosts(cfg) for nid, cfg in translation.nodes.items()}


def check_connected_kept(
    new: Translation,
    old: Translation | Mapping[str, int] | None,
    connected: Iterable[str],
    file: str | None = None,
) -> None:
    """Refuse a change that empties a node whose Envoy is connected: the node leaves the mesh (it
    would lose every listener), or it had HTTP routes and would have none (every request a 404).

    Args:
        new: the translation of the change; ``old``: the one being served, or its
            :func:`virtual_hosts` (None on the first load).
        connected: node ids with an open ADS stream.

    Raises:
        ConfigError: naming the nodes; stop their Envoys first to remove them.
    """
    connected = set(connected)
    gone = sorted(connected - set(new.nodes))
    if gone:
        raise ConfigError(
            f"the change removes {len(gone)} connected node(s) ({', '.join(gone[:5])}), whose Envoys "
            "would lose every listener; stop them first to remove them from the mesh",
            file=file,
        )
    if old is None:
        return
    served = virtual_hosts(old) if isinstance(old, Translation) else old
    emptied = sorted(
        nid for nid in connected & set(served) if served[nid] and not _virtual_hosts(new.nodes[nid])
    )
    if emptied:
        raise ConfigError(
            f"the change leaves connected node(s) {', '.join(emptied[:5])} without any route (every "
            f"request would get 404; {_KEEP})",
            file=file,
        )
