"""Wiring the authz native gate into sidecars and the ingress, from the document the server publishes.

``envoykit authz serve --gate-file FILE`` (or ``GET /gate`` on its metrics port) publishes the gate of
the policy it serves (:mod:`envoykit.core.authzgate`), rewritten on every reload it accepts. With
``extensions.authz.gate`` naming that file or URL and ``native_gate`` on (the default), every HTTP
proxy with ``extensions.authz`` gets the gate's RBAC filters right before ext_authz, and ext_authz its
``filter_enabled_metadata``: Envoy decides the requests no Python rule applies to, the server the rest.
The control plane never loads the policy files (nor their Python): it only assembles that data.

Fail closed: when the document cannot be read or checked (missing, unreachable, torn, another
version), or says the policy cannot be split, or a proxy's views make it step aside
(:class:`~envoykit.core.authzgate.NoGate`), the proxy keeps plain ext_authz: every request goes to
the server, which is always safe. A policy the server refused changes nothing: it publishes only
what it serves.

The views of the destination the server may read: its namespace comes from the proxy's own
certificate, so a sidecar under STRICT mTLS has one view, under PERMISSIVE two (known over mTLS,
unknown over plaintext), under DISABLE none known; an ingress with a certificate of its own may
present any namespace. The labels are the node's ``labels``.

Routes where ext_authz is disabled (``skip_paths``, a route's ``authz: {disabled: true}``) get the
gate filters disabled too (``RBACPerRoute`` without ``rbac``), so they stay unchecked as before.

With ``extensions.authz.decision_log``, every connection manager that gets the gate also gets its
decision logger (:mod:`envoykit.core.gatelog`): the proxy appends a line for each request its gate
decided alone, so that file and the server's decision log together account for every decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.nodes import NodeInfo
from envoykit.control.translate.filters import EXT_AUTHZ
from envoykit.control.translate.pb import pack
from envoykit.core.authzgate import (
    OTHER_NAMESPACE,
    Gate,
    GateDocError,
    GateDocument,
    NoGate,
    assemble,
    read_document,
)
from envoykit.core.errors import ConfigError
from envoykit.core.gatelog import native_decision_logs
from envoykit.core.logs import get_logger

log = get_logger("control")

_noted: dict[str, str] = {}


@dataclass(frozen=True)
class _View:
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def _note(key: str, message: str, warn: bool = False, **kw: object) -> None:
    if _noted.get(key) != message + repr(kw):  # once per distinct reason, not on every reload
        _noted[key] = message + repr(kw)
        (log.warning if warn else log.info)(message, **kw)


def gate_source(mesh: Mesh, base_dir: Path) -> str | None:
    """Where the gate document is read from (an absolute path or an http(s) URL), or None: no
    ``gate``, or ``native_gate`` off."""
    srv = mesh.extensions.authz
    if srv.gate is None or not srv.native_gate:
        return None
    if srv.gate.startswith(("http://", "https://")):
        return srv.gate
    p = Path(srv.gate)
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def decision_log_path(mesh: Mesh, base_dir: Path) -> str | None:
    """The absolute path of ``extensions.authz.decision_log`` (relative to mesh.yaml), or None."""
    srv = mesh.extensions.authz
    if srv.decision_log is None:
        return None
    p = Path(srv.decision_log)
    return str(p if p.is_absolute() else (base_dir / p).absolute())


def gate_decision_logs(
    mesh: Mesh, base_dir: Path, gate: Gate | None, node: str
) -> list[accesslog_pb2.AccessLog]:
    """The gate's decision loggers for a connection manager of ``node`` that runs ``gate``; none
    without a gate or ``extensions.authz.decision_log``."""
    path = decision_log_path(mesh, base_dir)
    if path is None or gate is None:
        return []
    return native_decision_logs(gate, path, mesh.extensions.authz.decision_log_sample_allow, node=node)


def load_gate_document(mesh: Mesh, base_dir: Path) -> GateDocument | None:
    """The published gate document, or None: no gate source, or the document cannot be read or
    checked (logged once per reason; every proxy then keeps plain ext_authz)."""
    src = gate_source(mesh, base_dir)
    if src is None:
        srv = mesh.extensions.authz
        if srv.policy_dir is not None and srv.native_gate:
            _note(
                "source",
                "native gate off: extensions.authz.gate is not set (the file `envoykit authz serve "
                "--gate-file` writes, or its /gate URL)",
            )
        return None
    try:
        doc = read_document(src)
    except GateDocError as exc:
        _note(src, "native gate off: every request goes to ext_authz", warn=True, reason=str(exc))
        return None
    _noted.pop(src, None)
    return doc


def _views(node: NodeInfo) -> list[_View]:
    labels = node.labels()
    known, unknown = _View(node.namespace, labels), _View(None, labels)
    gw = node.gateway
    if gw is not None and gw.kind == "ingress":
        # its TLS certificate is the operator's: whatever namespace a URI SAN in it may name
        return [unknown, _View(OTHER_NAMESPACE, labels)] if gw.tls is not None else [unknown]
    mtls = node.service.mtls if node.service is not None else gw.mtls if gw is not None else "DISABLE"
    return {"STRICT": [known], "PERMISSIVE": [known, unknown]}.get(mtls, [unknown])


def node_gate(doc: GateDocument | None, node: NodeInfo, base_dir: Path) -> Gate | None:
    """The gate for ``node`` (a sidecar's inbound side or a gateway), or None: plain ext_authz."""
    if doc is None:
        return None
    try:
        return assemble(doc, _views(node))
    except ConfigError as exc:  # NoGate, or a message in the document that does not parse
        warn = not isinstance(exc, NoGate)
        _note(
            f"gate:{doc.digest}",
            "native gate off: every request goes to ext_authz",
            warn,
            node=node.id,
            reason=str(exc),
        )
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
