"""``envoykit envoy inject``: add envoykit's filters and clusters to a static Envoy config you run yourself.

Every HTTP connection manager of the static listeners gets, before its router: the telemetry ext_proc,
ext_authz (after the native gate, with ``--policy-dir``), the rate-limit filter and Wasm filters (the
same messages the control plane builds for the mesh); with ``--telemetry``, every HTTP connection
manager and ``tcp_proxy`` also gets the access loggers the control plane gives a sidecar
(:mod:`envoykit.control.translate.accesslog`: by default Envoy's stats logger for the HTTP metrics,
which ``envoykit telemetry serve --envoy-admin`` reads, and the gRPC stream for TCP; reporter ``destination`` on an INBOUND listener, else ``source``, or ``--reporter``);
the extension clusters are added to ``static_resources.clusters`` (STATIC for an IP literal,
STRICT_DNS for a host name, as Envoy's ``Cluster.type`` asks); rate-limit descriptors go on every
virtual host of inline route configs; ``--workload`` and friends go into ``node.metadata``, which the
telemetry processor reads for its labels.

The patch works on the round-trip tree of :mod:`ruamel.yaml`, so the comments, key order and quoting
of the user's file survive. :mod:`envoykit.control.translate.inject_file` reads, validates and writes.

It refuses, saying why, a config it cannot patch safely: no static HTTP listener, an HCM whose last
filter is not the router, a filter, access logger or cluster already present (unless ``replace``), descriptors for
routes served over RDS, and ``--ratelimit`` where no route would ever call the service.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from envoykit.control.model.mesh import (
    AccessLogServer,
    AuthzServer,
    ExtensionServers,
    Mesh,
    RateLimitServer,
    TelemetryServer,
    WasmPlugin,
)
from envoykit.control.model.traffic import RouteRateLimit
from envoykit.control.model.types import Address
from envoykit.control.translate import clusters as cl
from envoykit.control.translate import filters as fl
from envoykit.control.translate.accesslog import (
    ACCESS_LOG_CLUSTER,
    FILE,
    http_access_logs,
    logger_dict,
    tcp_access_logs,
)
from envoykit.control.translate.inject_gate import config_gate, place_gate
from envoykit.control.translate.routes import rate_limits
from envoykit.core.accesslog import LOG_NAMES, STATS_PREFIXES
from envoykit.core.gatelog import native_decision_logs

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
_TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
DEFAULT_DOMAIN = "envoykit"


@dataclass
class InjectOptions:
    """What to add.

    Attributes:
        authz / ratelimit / extproc: extension servers, ``host:port`` (an IP literal or a DNS name).
        ratelimit_domain: the rate-limit filter's ``domain``; None: the replaced filter's, else
            ``envoykit``.
        descriptors: ``remote_address``, ``header:NAME=KEY`` or ``generic:KEY=VALUE``, one
            ``rate_limits`` entry per virtual host.
        wasm: ``FILE[:ROOT_ID[:CONFIGURATION]]``.
        telemetry: the access-log telemetry server (``envoykit telemetry serve``), ``host:port``.
        telemetry_transport: ``stats`` (Envoy counts Istio's metrics itself; the server reads them
            from this Envoy's admin: ``--envoy-admin``) or ``grpc`` (the access-log stream).
        json_log: with ``stats``, the file Envoy writes each request's JSON line to.
        reporter: ``destination`` or ``source`` for every listener; None: from each listener's
            ``traffic_direction`` (INBOUND: destination, else source).
        replace: re-point filters and clusters that are already there instead of refusing.
        workload, app, version, namespace, service_account, trust_domain, mesh_id: the identity the
            telemetry processor reports for this Envoy (``node.metadata``); the principal is
            ``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``.
        gate / native_gate: with ``--authz``, the gate document the authz server publishes (the
            file of ``--gate-file``, its ``/gate`` URL, or ``envoykit authz compile --gate
            --document``): the native gate is assembled from it (:mod:`envoykit.control.translate.inject_gate`)
            unless turned off.
        gate_decision_log / gate_decision_log_sample_allow: with the gate, the file Envoy appends a
            decision-log line to for each request the gate decided alone, and the fraction of native
            allows written (denies: all) — :mod:`envoykit.core.gatelog`.
    """

    authz: str | None = None
    ratelimit: str | None = None
    ratelimit_domain: str | None = None
    descriptors: list[str] = field(default_factory=list)
    extproc: str | None = None
    wasm: list[str] = field(default_factory=list)
    telemetry: str | None = None
    telemetry_transport: str = "stats"
    json_log: str | None = None
    reporter: str | None = None
    replace: bool = False
    workload: str | None = None
    app: str | None = None
    version: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    trust_domain: str = "cluster.local"
    mesh_id: str | None = None
    gate: str | None = None
    native_gate: bool = True
    gate_decision_log: str | None = None
    gate_decision_log_sample_allow: float = 1.0


def _d(msg: Message) -> dict[str, Any]:
    # through JSON: MessageToDict may hand back OrderedDicts, which YAML cannot dump safely
    out: dict[str, Any] = json.loads(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
    return out


def _descriptor(text: str) -> dict[str, Any]:
    if text == "remote_address":
        return {"remote_address": {}}
    kind, _, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if kind == "header" and eq and key and value:
        return {"request_headers": {"header_name": key, "descriptor_key": value}}
    if kind == "generic" and eq and key and value:
        return {"generic_key": {"descriptor_key": key, "descriptor_value": value}}
    raise ValueError(f"bad descriptor {text!r}: use remote_address, header:NAME=KEY or generic:KEY=VALUE")


def _wasm(spec: str, base: Path) -> WasmPlugin:
    file, _, rest = spec.partition(":")
    root_id, _, conf = rest.partition(":")
    path = Path(file)
    path = path if path.is_absolute() else (base / path).resolve()
    if not path.is_file():
        raise ValueError(f"--wasm {file}: no such file")
    return WasmPlugin(
        name=path.stem.lower().replace("_", "-"), file=str(path), root_id=root_id, configuration=conf
    )


def server_cluster(name: str, address: Address) -> dict[str, Any]:
    """An HTTP/2 cluster for an extension server: STATIC for an IP literal, else STRICT_DNS.

    STRICT_DNS resolves the name and balances over every address it returns (a Kubernetes Service
    name, ``localhost``); ``V4_PREFERRED`` so ``localhost`` reaches a server bound to 127.0.0.1.
    Source: envoy.config.cluster.v3.Cluster ``type`` and ``dns_lookup_family``.
    """
    c = cl.static_cluster(name, [address], http2=True)
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        c.type = cluster_pb2.Cluster.STRICT_DNS
        c.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    return _d(c)


def _network_filters(config: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(listener, network filter ``typed_config``) of every static listener's filter chains."""
    for lst in (config.get("static_resources") or {}).get("listeners") or []:
        chains = list(lst.get("filter_chains") or [])
        if lst.get("default_filter_chain"):
            chains.append(lst["default_filter_chain"])
        for chain in chains:
            for f in chain.get("filters") or []:
                yield lst, f.get("typed_config") or {}


def _hcms(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [tc for _, tc in _network_filters(config) if tc.get("@type") == _HCM]


def _route_configs_have_rate_limits(hcms: list[dict[str, Any]]) -> bool:
    for hcm in hcms:
        if "route_config" not in hcm:
            return True  # routes over RDS may carry rate_limits: not ours to judge
        for vh in hcm["route_config"].get("virtual_hosts") or []:
            if vh.get("rate_limits") or any(
                (r.get("route") or {}).get("rate_limits") for r in vh.get("routes") or []
            ):
                return True
    return False


def _find(filters: list[Any], new: dict[str, Any]) -> int | None:
    kind = new["typed_config"]["@type"]
    for i, f in enumerate(filters):
        if f.get("name") == new["name"]:
            return i
        if kind != _WASM and (f.get("typed_config") or {}).get("@type") == kind:
            return i
    return None


def _identity(opts: InjectOptions) -> dict[str, str]:
    md = {
        "workload": opts.workload,
        "app": opts.app or opts.workload,
        "version": opts.version,
        "namespace": opts.namespace,
        "service_account": opts.service_account,
        "mesh_id": opts.mesh_id,
    }
    if opts.namespace and opts.service_account:
        md["principal"] = f"spiffe://{opts.trust_domain}/ns/{opts.namespace}/sa/{opts.service_account}"
    return {k: v for k, v in md.items() if v}


def _servers(opts: InjectOptions) -> ExtensionServers:
    servers = ExtensionServers()
    if opts.authz:
        servers.authz = AuthzServer(address=Address.model_validate(opts.authz))
    if opts.ratelimit:
        servers.ratelimit = RateLimitServer(address=Address.model_validate(opts.ratelimit))
    if opts.extproc:
        servers.telemetry = TelemetryServer(address=Address.model_validate(opts.extproc))
    return servers


def _existing_domain(hcms: list[dict[str, Any]]) -> str | None:
    for hcm in hcms:
        for f in hcm.get("http_filters") or []:
            if f.get("name") == fl.RATELIMIT or (f.get("typed_config") or {}).get("@type", "").endswith(
                "ratelimit.v3.RateLimit"
            ):
                return str((f.get("typed_config") or {}).get("domain") or "") or None
    return None


def inject_config(config: Any, opts: InjectOptions, base_dir: Path = Path(".")) -> list[str]:
    """Patch ``config`` (a bootstrap as a mapping; a ruamel round-trip map keeps its comments) in place.

    Returns notes for the user (what was re-pointed, what telemetry will report).

    Raises:
        ValueError: the config cannot be patched safely (the message says why), or bad options.
    """
    if not isinstance(config, dict):
        raise ValueError("not an Envoy bootstrap (expected a mapping)")
    hcms = _hcms(config)
    tcp = any(tc.get("@type") == _TCP_PROXY for _, tc in _network_filters(config))
    if not hcms and not (opts.telemetry and tcp):
        lds = "lds_config" in (config.get("dynamic_resources") or {})
        raise ValueError(
            "listeners come over LDS: patch the control plane instead"
            if lds
            else "no static listener with an HTTP connection manager (or, for --telemetry, a tcp_proxy)"
        )
    notes: list[str] = []
    servers = _servers(opts)
    mesh = Mesh(extensions=servers)
    new_filters: list[dict[str, Any]] = []
    new_clusters: list[dict[str, Any]] = []
    if opts.extproc:
        new_filters.append(_d(fl.telemetry_filter(mesh)))
        new_clusters.append(server_cluster(cl.TELEMETRY_CLUSTER, servers.telemetry.address))
    gate = None
    if opts.authz:
        if opts.gate is not None and opts.native_gate:
            gate, gate_notes = config_gate(config, opts.gate)
            notes += gate_notes
        enabled = gate.ext_authz_enabled if gate is not None else None
        new_filters.append(_d(fl.ext_authz_filter(mesh, enabled)))
        new_clusters.append(server_cluster(cl.AUTHZ_CLUSTER, servers.authz.address))
    elif opts.gate is not None:
        raise ValueError("--gate is for the native gate in front of --authz: give --authz too")
    decision_logs: list[dict[str, Any]] = []
    if opts.gate_decision_log is not None:
        if opts.gate is None:
            raise ValueError("--gate-decision-log logs the native gate's decisions: give --gate too")
        if gate is not None:
            node = (config.get("node") or {}).get("id")
            loggers = native_decision_logs(
                gate, opts.gate_decision_log, opts.gate_decision_log_sample_allow, node=node
            )
            decision_logs = [_d(x) for x in loggers]
        else:
            notes.append("no native gate, so no gate decision log: the server logs every decision")
    if opts.ratelimit:
        domain = opts.ratelimit_domain or (_existing_domain(hcms) if opts.replace else None)
        new_filters.append(_d(fl.ratelimit_filter(mesh, domain or DEFAULT_DOMAIN, False)))
        new_clusters.append(server_cluster(cl.RATELIMIT_CLUSTER, servers.ratelimit.address))
    new_filters += [_d(fl.wasm_filter(_wasm(w, base_dir), base_dir)) for w in opts.wasm]
    if opts.telemetry:
        als = AccessLogServer(
            address=Address.model_validate(opts.telemetry),
            transport=opts.telemetry_transport,  # type: ignore[arg-type]
            json_log=opts.json_log,
        )
        new_clusters.append(server_cluster(ACCESS_LOG_CLUSTER, als.address))  # tcp_grpc, and grpc
        notes += _add_access_logs(config, als, opts)
        if als.transport == "stats":
            notes.append(
                "telemetry: Envoy counts Istio's metrics itself; run `envoykit telemetry serve "
                "--envoy-admin http://<this Envoy's admin>` to read them"
            )
    elif not new_filters:
        raise ValueError("nothing to inject: give --authz, --ratelimit, --extproc, --wasm or --telemetry")
    descriptors: list[dict[str, Any]] = []
    if opts.descriptors:
        if not opts.ratelimit:
            raise ValueError("--descriptor needs --ratelimit")
        rl = RouteRateLimit.model_validate({"actions": [_descriptor(d) for d in opts.descriptors]})
        descriptors = [_d(r) for r in rate_limits([rl])]
    elif opts.ratelimit and not _route_configs_have_rate_limits(hcms):
        raise ValueError(
            "--ratelimit without --descriptor: no route of this config has rate_limits actions, so "
            "Envoy would never call the rate-limit service. Say what to count, e.g. "
            "--descriptor remote_address (per client address), --descriptor header:x-api-key=api_key "
            "or --descriptor generic:route=all (one shared budget)"
        )

    for hcm in hcms:
        prefix = hcm.get("stat_prefix", "?")
        filters = hcm.get("http_filters")
        if filters is None:
            filters = hcm["http_filters"] = []
        last = filters[-1] if filters else {}
        if (last.get("typed_config") or {}).get("@type") != _ROUTER and last.get("name") != fl.ROUTER:
            raise ValueError(f"HCM {prefix}: the last HTTP filter is not the router")
        for nf in new_filters:
            at = _find(filters, nf)
            if at is None:
                filters.insert(len(filters) - 1, nf)
            elif opts.replace:
                notes.append(f"HCM {prefix}: replaced filter {filters[at].get('name')!r} with {nf['name']!r}")
                filters[at] = nf
            else:
                raise ValueError(
                    f"HCM {prefix} already has filter {filters[at].get('name')!r} "
                    f"({nf['typed_config']['@type'].rsplit('.', 1)[-1]}): give --replace to re-point it"
                )
        if gate is not None:
            place_gate(hcm, gate, opts.replace, decision_logs)
        if descriptors:
            if "route_config" not in hcm:
                raise ValueError(f"HCM {prefix}: routes come over RDS; cannot add descriptors")
            for vh in hcm["route_config"].get("virtual_hosts") or []:
                have = vh.get("rate_limits")
                if have is None:
                    have = vh["rate_limits"] = []
                have.extend(d for d in descriptors if d not in have)
    res: dict[str, Any] = config["static_resources"]
    clusters = res.get("clusters")
    if clusters is None:
        clusters = res["clusters"] = []
    for c in new_clusters:
        at = next((i for i, old in enumerate(clusters) if old.get("name") == c["name"]), None)
        if at is None:
            clusters.append(c)
        elif opts.replace:
            clusters[at] = c
            notes.append(f"replaced cluster {c['name']!r}")
        else:
            raise ValueError(f"a cluster named {c['name']!r} already exists: give --replace to re-point it")
    notes += _set_identity(config, opts)
    return notes


def _set_identity(config: dict[str, Any], opts: InjectOptions) -> list[str]:
    ident = _identity(opts)
    if ident:
        node = config.get("node")
        if node is None:
            node = config["node"] = {}
        if "workload" in ident:
            node.setdefault("id", ident["workload"])
            node.setdefault("cluster", ident.get("app", ident["workload"]))
        md: dict[str, Any] | None = node.get("metadata")
        if md is None:
            md = node["metadata"] = {}
        md.update(ident)
    if opts.extproc or opts.telemetry:
        have = (config.get("node") or {}).get("metadata") or {}
        missing = [k for k in ("workload", "namespace", "service_account") if not have.get(k)]
        if missing:
            return [
                "telemetry will report " + ", ".join(missing) + " as 'unknown' for this Envoy: give "
                "--workload, --namespace and --service-account (node.metadata)"
            ]
    return []


def _node_ids(config: dict[str, Any]) -> dict[str, str]:
    node = config.get("node") or {}
    meta = node.get("metadata") or {}
    return {**{k: str(v) for k, v in meta.items() if isinstance(v, str)}, "id": str(node.get("id", ""))}


def _ours(log: dict[str, Any], log_names: set[str]) -> bool:
    """Whether ``log`` is an access logger envoykit added (its gRPC log name, its stats scope, or its
    JSON file logger, which follows the stats logger)."""
    tc = log.get("typed_config") or {}
    if (tc.get("common_config") or {}).get("log_name") in log_names:
        return True
    if (tc.get("stats_scope") or {}).get("prefix") in STATS_PREFIXES.values():
        return True
    fmt = (tc.get("log_format") or {}).get("json_format") or {}
    return log.get("name") == FILE and {"kind", "reporter", "node"} <= fmt.keys()


def _add_access_logs(config: dict[str, Any], als: AccessLogServer, opts: InjectOptions) -> list[str]:
    """Add the control plane's gRPC access logger to every static HCM and ``tcp_proxy``."""
    if opts.reporter not in (None, "destination", "source"):
        raise ValueError(f"--reporter {opts.reporter!r}: use destination or source")
    notes: list[str] = []
    ours = set(LOG_NAMES.values())
    for lst, tc in _network_filters(config):
        reporter = opts.reporter or ("destination" if lst.get("traffic_direction") == "INBOUND" else "source")
        if tc.get("@type") == _HCM:
            new = [logger_dict(a) for a in http_access_logs(als, reporter, node=_node_ids(config))]
        elif tc.get("@type") == _TCP_PROXY:
            new = [_d(a) for a in tcp_access_logs(als, reporter)]
            options = tc.get("access_log_options")
            if options is None:
                options = tc["access_log_options"] = {}
            options["flush_access_log_on_connected"] = True
            if als.tcp_flush_interval:
                options["access_log_flush_interval"] = f"{als.tcp_flush_interval:g}s"
        else:
            continue
        logs = tc.get("access_log")
        if logs is None:
            logs = tc["access_log"] = []
        name = tc.get("stat_prefix", "?")
        for i, old in reversed(list(enumerate(logs))):
            if _ours(old, ours):
                if not opts.replace:
                    raise ValueError(
                        f"{name} already has envoykit's access logger: give --replace to re-point it"
                    )
                del logs[i]
                notes.append(f"{name}: replaced envoykit's access logger")
        logs.extend(new)
    return notes
