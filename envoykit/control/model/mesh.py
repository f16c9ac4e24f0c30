"""The mesh model: what a person writes in ``mesh.yaml`` (schema ``envoykit/v1``), as pydantic models.

Layer 1 of validation is this schema (types, ranges, unknown keys refused); layer 2 (references and
semantics) lives in :mod:`envoykit.control.model.semantics`; layer 3 (``envoy --mode validate`` of the
generated config) in :mod:`envoykit.control.translate.validate`. Field-by-field documentation: docs/control.md.

Shapes::

    Mesh
      control_plane: ControlPlane            (xDS address, state dir)
      extensions: ExtensionServers           (where authz, ratelimit, telemetry, processors run; Wasm)
      services: [Service]                    (workloads with their sidecars)
      gateways: [Gateway]                    (ingress and egress)
      virtual_services: [VirtualService]     (routing, see traffic.py)
      destination_rules: [DestinationRule]   (destination policy, see traffic.py)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from envoykit.control.model.traffic import DestinationRule, RouteRateLimit, VirtualService
from envoykit.control.model.types import Address, Duration, Name, Strict

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
Protocol = Literal["http", "http2", "grpc", "tcp"]


class ControlPlane(Strict):
    """Where the control plane listens (ADS and SDS on one gRPC port) and keeps its state (CA, tokens)."""

    xds: Address = Address(port=15010)
    state_dir: str = ".envoykit"


class GrpcExtension(Strict):
    """A gRPC extension server Envoy calls (an ``envoy_grpc`` cluster of HTTP/2 endpoints)."""

    address: Address
    timeout: Duration = 0.5


class AuthzServer(GrpcExtension):
    """The ext_authz server (``envoy.service.auth.v3.Authorization``); fails closed unless told otherwise.

    ``policy_dir``: the directory the server serves (relative to mesh.yaml; ``envoykit up`` starts
    the server on it). ``gate``: where the control plane reads the native gate the server publishes
    for the policy it serves — the file of ``envoykit authz serve --gate-file`` (relative to
    mesh.yaml) or its ``http://HOST:METRICS_PORT/gate`` URL. With it and ``native_gate`` (default on),
    proxies get the native gate: Envoy's RBAC decides the requests no Python rule applies to,
    ext_authz the rest (docs/authz.md, "The native gate"). The control plane never reads the policy
    files themselves.

    ``decision_log``: with the gate, the file every proxy appends a line to for each request its gate
    decided alone (the server's ``--decision-log`` schema with ``"decided_by": "envoy"``;
    :mod:`envoykit.core.gatelog`), relative to mesh.yaml; ``envoykit up`` has the server write its
    own lines to the same file. ``decision_log_sample_allow``: the fraction of allows written, by
    the proxies and the server alike (denies: all).
    """

    address: Address = Address(port=9191)
    failure_mode_allow: bool = False
    policy_dir: str | None = None
    gate: str | None = None
    native_gate: bool = True
    decision_log: str | None = None
    decision_log_sample_allow: float = Field(default=1.0, ge=0.0, le=1.0)


class RateLimitServer(GrpcExtension):
    """The global rate-limit service (``envoy.service.ratelimit.v3.RateLimitService``)."""

    address: Address = Address(port=8081)


class TelemetryServer(GrpcExtension):
    """The telemetry ext_proc server (``envoy.service.ext_proc.v3.ExternalProcessor``, observability mode)."""

    address: Address = Address(port=9292)


class AccessLogServer(Strict):
    """The telemetry server Envoys stream their access logs to (``envoykit telemetry serve``,
    ``envoy.service.accesslog.v3.AccessLogService``): Istio's metrics and JSON access logs.

    On by default for every sidecar (inbound and outbound) and gateway. Envoy buffers entries and
    flushes them every ``buffer_flush_interval`` seconds or at ``buffer_size_bytes``
    (``CommonGrpcAccessLogConfig``); while the server is unreachable it holds at most that many bytes
    and drops beyond (Envoy's ``access_logs.grpc_access_log.logs_dropped``); entries already sent on a
    stream that then broke are lost too (``logs_written`` minus what the server counted). 256 KiB: the
    server's cost per gRPC message is large against its cost per entry (bench/telemetry.py, consecutive
    runs: 20.6 µs per entry with 16 KiB messages, 8.9 with 256 KiB), and the larger buffer holds out
    longer against a slow server before Envoy drops.

    ``transport`` is how HTTP requests reach the metrics: ``stats`` (the default) has each Envoy count
    them into its own stats (``envoy.access_loggers.stats``), which the server reads from Envoy's admin
    (``envoykit telemetry serve --envoy-admin``) and labels as Istio does: no entry per request leaves
    Envoy. ``grpc`` streams every entry to the server (``http_grpc``), which also writes its JSON line.
    ``max_series`` bounds each logger's label sets (``stats_scope.max_histograms``, three per set): past it
    Envoy counts no new label set, which shows as a gap beside Envoy's request count. ``json_log``
    (stats transport): the file on the Envoys' host where Envoy's file access logger writes each
    request's JSON line (None: no HTTP JSON lines); ``{node}`` stands for the node id. TCP connections
    always go over ``tcp_grpc`` (one entry per connection, not per request).

    ``tcp_flush_interval`` is ``tcp_proxy``'s ``access_log_options.access_log_flush_interval``: an open
    TCP connection is logged this often (``TcpPeriodic`` entries, cumulative byte counts), so its bytes
    are counted while it lives, as Istio reports TCP metrics periodically; None: only at close.
    """

    address: Address = Address(port=9293)
    enabled: bool = True
    transport: Literal["stats", "grpc"] = "stats"
    max_series: int = Field(default=2000, ge=1)
    json_log: str | None = None
    buffer_flush_interval: Duration = 1.0
    buffer_size_bytes: int = Field(default=262144, ge=0)
    tcp_flush_interval: Duration | None = 5.0

    @model_validator(mode="after")
    def _positive_tcp_flush(self) -> AccessLogServer:
        if self.tcp_flush_interval is not None and self.tcp_flush_interval < 0.001:
            raise ValueError("tcp_flush_interval must be at least 1ms (Envoy's bound), or null for none")
        return self


class ProcessorServer(GrpcExtension):
    """A user ext_proc processor; ``*_mode`` are Envoy ``ProcessingMode`` values for each phase."""

    name: Name
    request_header_mode: Literal["SEND", "SKIP"] = "SEND"
    response_header_mode: Literal["SEND", "SKIP"] = "SEND"
    request_body_mode: Literal["NONE", "BUFFERED", "STREAMED"] = "NONE"
    response_body_mode: Literal["NONE", "BUFFERED", "STREAMED"] = "NONE"
    failure_mode_allow: bool = False


class WasmPlugin(Strict):
    """A Proxy-Wasm plugin run in Envoy's V8 (``envoy.filters.http.wasm``, ``PluginConfig``).

    ``file`` is a path to the ``.wasm`` module (relative paths are relative to mesh.yaml);
    ``configuration`` is given to the plugin as a string (a mapping is passed as JSON).
    """

    name: Name
    file: str
    root_id: str = ""
    vm_id: str = ""
    configuration: str | dict[str, Any] = ""
    fail_open: bool = False


class ExtensionServers(Strict):
    """The extension servers of the mesh; a proxy uses one only if its ``extensions`` enable it."""

    authz: AuthzServer = AuthzServer()
    ratelimit: RateLimitServer = RateLimitServer()
    telemetry: TelemetryServer = TelemetryServer()
    access_log: AccessLogServer = AccessLogServer()
    processors: list[ProcessorServer] = []
    wasm: list[WasmPlugin] = []


class AuthzFilter(Strict):
    """ext_authz on a proxy: ``context_extensions`` go with every check; ``skip_paths`` are not checked."""

    context_extensions: dict[str, str] = {}
    skip_paths: list[str] = []


class RateLimitFilter(Strict):
    """The rate-limit filter on a proxy (``envoy.filters.http.ratelimit``) for ``domain``.

    Descriptors come from route ``rate_limits`` (gateways) and, on a sidecar's inbound side, from
    ``rate_limits`` here (applied to every request of the workload).
    """

    domain: str = "envoykit"
    failure_mode_deny: bool = False
    rate_limits: list[RouteRateLimit] = []


class ProxyExtensions(Strict):
    """Which extensions a sidecar (inbound side) or gateway runs, in Envoy's filter order:
    telemetry → ext_authz → ratelimit → fault → processors → wasm → router."""

    authz: AuthzFilter | None = None
    ratelimit: RateLimitFilter | None = None
    telemetry: bool = False
    processors: list[str] = []
    wasm: list[str] = []


class Sidecar(Strict):
    """A workload's Envoy: ``inbound`` receives mesh traffic for the app; the app sends its own calls
    to ``outbound`` (plain HTTP, ``Host: <service>``); ``admin`` is Envoy's admin address.

    ``outbound_tcp`` maps tcp services to local addresses where the sidecar listens for the app's
    connections to them (one ``tcp_proxy`` listener each, mTLS towards the service).
    """

    inbound: Address
    outbound: Address
    admin: Address
    outbound_tcp: dict[str, Address] = {}


class Workload(Strict):
    """One running instance of a service: the app at ``address``, fronted by ``sidecar`` (or reached
    directly when ``sidecar`` is null: then the service cannot be STRICT)."""

    name: Name
    version: str = "v1"
    address: Address
    labels: dict[str, str] = {}
    sidecar: Sidecar | None = None


class Service(Strict):
    """A mesh service: its name (the host other workloads call), port, protocol, identity and workloads.

    ``service_account`` defaults to ``name``; the workload identity is
    ``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``.
    """

    name: Name
    namespace: Name | None = None
    port: int = Field(default=80, ge=1, le=65535)
    protocol: Protocol = "http"
    service_account: Name | None = None
    mtls: MtlsMode = "PERMISSIVE"
    workloads: list[Workload] = Field(min_length=1)
    extensions: ProxyExtensions = ProxyExtensions()


class GatewayTLS(Strict):
    """TLS termination at an ingress gateway with a given certificate chain and key (PEM files)."""

    cert_file: str
    key_file: str


class ExternalHost(Strict):
    """An external host the egress gateway lets through (REGISTRY_ONLY: everything else is refused).

    ``host`` is matched on the request authority; ``address`` is where it is reached (default
    ``host:port``, resolved by DNS); ``tls`` originates TLS towards it: SNI ``host``, and the server's
    certificate must chain to ``ca_file`` (PEM; the system bundle by default) and name ``host``.
    """

    host: str
    port: int = Field(default=80, ge=1, le=65535)
    address: Address | None = None
    tls: bool = False
    ca_file: str = "/etc/ssl/certs/ca-certificates.crt"


class Gateway(Strict):
    """An ingress gateway (routes from hosts and paths to services, VirtualServices bound by ``gateways:``)
    or an egress gateway (an allow-list of external hosts; ``mtls`` is how sidecars reach it:
    DISABLE by default, STRICT or PERMISSIVE to require the mesh identity of callers)."""

    name: Name
    kind: Literal["ingress", "egress"]
    namespace: Name | None = None
    service_account: Name | None = None
    address: Address
    admin: Address
    tls: GatewayTLS | None = None
    allow: list[ExternalHost] = []
    mtls: MtlsMode = "DISABLE"
    extensions: ProxyExtensions = ProxyExtensions()
    stream_idle_timeout: Duration | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> Gateway:
        if self.kind == "egress" and self.tls is not None:
            raise ValueError("tls termination is for ingress gateways")
        if self.kind == "ingress" and self.allow:
            raise ValueError("allow (external hosts) is for egress gateways")
        if self.kind == "ingress" and self.mtls != "DISABLE":
            raise ValueError("mtls is for egress gateways (an ingress gateway is the mesh's edge)")
        return self


class Mesh(Strict):
    """The whole mesh as written in mesh.yaml (``api_version: envoykit/v1``)."""

    api_version: Literal["envoykit/v1"] = "envoykit/v1"
    mesh_id: Name = "envoykit"
    trust_domain: str = "cluster.local"
    namespace: Name = "default"
    control_plane: ControlPlane = ControlPlane()
    extensions: ExtensionServers = ExtensionServers()
    services: list[Service] = []
    gateways: list[Gateway] = []
    virtual_services: list[VirtualService] = []
    destination_rules: list[DestinationRule] = []

    # Lookup indexes, built on first use. They remember the list they index, so a copy made with
    # model_copy(update={"services": ...}) (a new list) gets fresh ones.
    _svc_index: Any = PrivateAttr(default=None)
    _dr_index: Any = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        """Equal when every field is equal (the lookup indexes do not count)."""
        if not isinstance(other, Mesh):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    # -- lookups used by translation (the model is immutable once validated) --

    def service(self, name: str) -> Service | None:
        """The service named ``name`` (also accepts ``name.namespace`` and ``name.namespace.svc``)."""
        if self._svc_index is None or self._svc_index[0] is not self.services:
            self._svc_index = (self.services, {s.name: s for s in self.services})
        base = name.split(".", 1)[0]
        svc: Service | None = self._svc_index[1].get(base)
        if svc is None or base == name or name.startswith(f"{base}.{self.ns(svc)}"):
            return svc
        return None

    def ns(self, item: Service | Gateway) -> str:
        """The namespace of a service or gateway (its own, or the mesh default)."""
        return item.namespace or self.namespace

    def service_account(self, item: Service | Gateway) -> str:
        """The service account of a service or gateway (defaults to its name)."""
        return item.service_account or item.name

    def workloads(self) -> Iterator[tuple[Service, Workload]]:
        """Every (service, workload) pair, in file order."""
        for svc in self.services:
            for wl in svc.workloads:
                yield svc, wl

    def gateway(self, name: str) -> Gateway | None:
        """The gateway named ``name``."""
        return next((g for g in self.gateways if g.name == name), None)

    def destination_rule(self, host: str) -> DestinationRule | None:
        """The DestinationRule for service ``host``, if any."""
        svc = self.service(host)
        if svc is None:
            return None
        idx = self._dr_index
        if idx is None or idx[0] is not self.destination_rules or idx[1] is not self.services:
            rules: dict[str, DestinationRule] = {}
            for d in self.destination_rules:
                target = self.service(d.host)
                if target is not None:
                    rules.setdefault(target.name, d)
            idx = self._dr_index = (self.destination_rules, self.services, rules)
        rule: DestinationRule | None = idx[2].get(svc.name)
        return rule

    def processor(self, name: str) -> ProcessorServer | None:
        """The user processor named ``name``."""
        return next((p for p in self.extensions.processors if p.name == name), None)

    def wasm_plugin(self, name: str) -> WasmPlugin | None:
        """The Wasm plugin named ``name``."""
        return next((w for w in self.extensions.wasm if w.name == name), None)
