"""Wiring the authz native gate (:mod:`envoykit.authz.gate`) into sidecars and the ingress.

With ``extensions.authz.policy_dir`` (the directory ``envoykit authz serve`` serves) and
``native_gate`` on (the default), every HTTP proxy with ``extensions.authz`` gets the gate's RBAC
filters right before ext_authz, and ext_authz its ``filter_enabled_metadata``: Envoy decides the
requests no Python rule applies to, the server the rest. When the policy cannot be split
(:class:`~envoykit.authz.gate.NoGate`: a Python rule without pre-match, a YAML policy needing JWT
facts, a scope the server may see differently), that proxy keeps plain ext_authz (logged once).

The views of the destination the server may read (:class:`~envoykit.authz.istio.Workload`): its
namespace comes from the proxy's own certificate, so a sidecar under STRICT mTLS has one view, under
PERMISSIVE two (known over mTLS, unknown over plaintext), under DISABLE none known; an ingress with a
certificate of its own may present any namespace. The labels are the node's ``labels``.

Routes where ext_authz is disabled (``skip_paths``, a route's ``authz: {disabled: true}``) get the
gate filters disabled too (``RBACPerRoute`` without ``rbac``), so they stay unchecked as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.nodes import NodeInfo
from envoykit.control.translate.filters import EXT_AUTHZ
from envoykit.control.translate.pb import pack
from envoykit.core.errors import ConfigError
from envoykit.core.logs import get_logger

if TYPE_CHECKING:  # envoykit.authz (policy loader, JWT libraries) loads only for a mesh with a gate
    from envoykit.authz.gate import Gate
    from envoykit.authz.istio import Workload
    from envoykit.authz.loader import Policy

log = get_logger("control")

#: The last policy compiled per directory: a reload that empties it is refused (as the server does).
_last: dict[Path, Policy] = {}
_noted: dict[Path, str] = {}


def gate_policy_dir(mesh: Mesh, base_dir: Path) -> Path | None:
    """The policy directory the gate compiles from, or None (no ``policy_dir``, or ``native_gate``
    off)."""
    srv = mesh.extensions.authz
    if srv.policy_dir is None or not srv.native_gate:
        return None
    d = Path(srv.policy_dir)
    return d if d.is_absolute() else (base_dir / d).resolve()


def load_gate_policy(mesh: Mesh, base_dir: Path) -> Policy | None:
    """Load the gate's policy directory, refusing what the server would refuse.

    Raises:
        ConfigError: a policy file is invalid, or the reload would empty the last one loaded
            (:func:`~envoykit.authz.loader.check_not_emptied`): the mesh change is refused whole, and
            the serving gate stays, in step with the server keeping its last good policy.
    """
    d = gate_policy_dir(mesh, base_dir)
    if d is None:
        return None
    from envoykit.authz.loader import load_policy

    policy = load_policy(d, _last.get(d))
    _last[d] = policy
    return policy


def _views(node: NodeInfo) -> list[Workload]:
    from envoykit.authz.gate import OTHER_NAMESPACE
    from envoykit.authz.istio import Workload

    labels = node.labels()
    known, unknown = Workload(node.namespace, labels), Workload(None, labels)
    gw = node.gateway
    if gw is not None and gw.kind == "ingress":
        # its TLS certificate is the operator's: whatever namespace a URI SAN in it may name
        return [unknown, Workload(OTHER_NAMESPACE, labels)] if gw.tls is not None else [unknown]
    mtls = node.service.mtls if node.service is not None else gw.mtls if gw is not None else "DISABLE"
    return {"STRICT": [known], "PERMISSIVE": [known, unknown]}.get(mtls, [unknown])


def node_gate(policy: Policy | None, node: NodeInfo, base_dir: Path) -> Gate | None:
    """The gate for ``node`` (a sidecar's inbound side or a gateway), or None: plain ext_authz."""
    if policy is None:
        return None
    from envoykit.authz.gate import NoGate, compile_gate

    views = _views(node)
    try:
        return compile_gate(policy, views)
    except NoGate as exc:
        key = Path(policy.files[0]).parent if policy.files else base_dir
        if _noted.get(key) != str(exc):
            _noted[key] = str(exc)
            log.info("native gate off: every request goes to ext_authz", node=node.id, reason=str(exc))
        return None


def disable_gate_where_authz_is(config: route_pb2.RouteConfiguration, gate: Gate) -> None:
    """Turn the gate's filters off on every virtual host and route of ``config`` that disables
    ext_authz (``ExtAuthzPerRoute.disabled``)."""
    off = pack(http_rbac.RBACPerRoute())  # no ``rbac``: the filter is off on this route
    holders = [*config.virtual_hosts, *(r for vh in config.virtual_hosts for r in vh.routes)]
    for h in holders:
        if EXT_AUTHZ not in h.typed_per_filter_config:
            continue
        per_route = ext_authz_pb2.ExtAuthzPerRoute()
        if not h.typed_per_filter_config[EXT_AUTHZ].Unpack(per_route):
            raise ConfigError(f"{config.name}: ext_authz per-route config of an unexpected type")
        if per_route.disabled:
            for name in gate.filter_names:
                h.typed_per_filter_config[name].CopyFrom(off)
