"""Translation of services, destination rules and extension servers into Envoy clusters and endpoints.

Cluster names follow Istio's shape so an Istio user recognises them in ``/clusters`` and stats:

* ``outbound|<port>|<subset>|<service>.<namespace>`` a mesh service (subset empty: every workload);
* ``inbound|<port>||`` the local app behind a sidecar;
* ``external|<port>||<host>`` an external host behind the egress gateway;
* ``ext_authz``, ``rate_limit_service``, ``ext_proc_telemetry``, ``ext_proc|<name>`` extension servers.

Mesh services are EDS clusters (endpoints over ADS); the rest are STATIC or LOGICAL_DNS.
Sources: Envoy ``envoy.config.cluster.v3.Cluster``, ``CircuitBreakers``, ``OutlierDetection``,
``HealthCheck``; Istio's DestinationRule ``TrafficPolicy``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import wrappers_pb2

from envoykit.control.model.mesh import ExternalHost, Mesh, Service, Workload
from envoykit.control.model.queries import endpoint_address, service_policy, subset_members
from envoykit.control.model.traffic import TrafficPolicy
from envoykit.control.model.types import Address
from envoykit.control.translate.pb import ads_source, duration, pack, socket_address

AUTHZ_CLUSTER = "ext_authz"
RATELIMIT_CLUSTER = "rate_limit_service"
TELEMETRY_CLUSTER = "ext_proc_telemetry"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}

#: Builds the upstream TLS transport socket for a cluster towards a service (or None for plaintext).
UpstreamTls = Callable[[Service], "base_pb2.TransportSocket | None"]


def service_host(mesh: Mesh, svc: Service) -> str:
    """``<name>.<namespace>``: the host part of a service's cluster names."""
    return f"{svc.name}.{mesh.ns(svc)}"


def outbound_cluster_name(mesh: Mesh, svc: Service, subset: str = "") -> str:
    """``outbound|<port>|<subset>|<name>.<namespace>``."""
    return f"outbound|{svc.port}|{subset}|{service_host(mesh, svc)}"


def inbound_cluster_name(svc: Service) -> str:
    """``inbound|<port>||``: the local app behind a sidecar."""
    return f"inbound|{svc.port}||"


def external_cluster_name(ext: ExternalHost) -> str:
    """``external|<port>||<host>``."""
    return f"external|{ext.port}||{ext.host}"


def processor_cluster_name(name: str) -> str:
    """``ext_proc|<name>``: a user processor's cluster."""
    return f"ext_proc|{name}"


def load_assignment(name: str, addresses: Iterable[Address]) -> endpoint_pb2.ClusterLoadAssignment:
    """A ``ClusterLoadAssignment`` with one locality holding ``addresses``."""
    lb = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(a))
        )
        for a in addresses
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb)]
    )


def _protocol_options(
    http2: bool, policy: TrafficPolicy | None
) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    http = policy.connection_pool.http if policy and policy.connection_pool else None
    if not http2 and (
        http is None or (http.max_requests_per_connection is None and http.idle_timeout is None)
    ):
        return None
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    explicit = opts.explicit_http_config
    if http2:
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    if http is not None and http.max_requests_per_connection is not None:
        opts.common_http_protocol_options.max_requests_per_connection.value = http.max_requests_per_connection
    if http is not None and http.idle_timeout is not None:
        opts.common_http_protocol_options.idle_timeout.CopyFrom(duration(http.idle_timeout))
    return opts


def _apply_policy(c: cluster_pb2.Cluster, policy: TrafficPolicy | None) -> None:
    if policy is None:
        return
    lb = policy.load_balancer
    if lb is not None:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH if lb.consistent_hash else _LB[lb.simple or "ROUND_ROBIN"]
    pool = policy.connection_pool
    if pool is not None:
        th = circuit_breaker_pb2.CircuitBreakers.Thresholds()
        if pool.tcp and pool.tcp.max_connections is not None:
            th.max_connections.value = pool.tcp.max_connections
        if pool.tcp and pool.tcp.connect_timeout is not None:
            c.connect_timeout.CopyFrom(duration(pool.tcp.connect_timeout))
        if pool.http:
            if pool.http.http1_max_pending_requests is not None:
                th.max_pending_requests.value = pool.http.http1_max_pending_requests
            if pool.http.http2_max_requests is not None:
                th.max_requests.value = pool.http.http2_max_requests
            if pool.http.max_retries is not None:
                th.max_retries.value = pool.http.max_retries
        c.circuit_breakers.thresholds.append(th)
    od = policy.outlier_detection
    if od is not None:
        o = outlier_detection_pb2.OutlierDetection(
            interval=duration(od.interval),
            base_ejection_time=duration(od.base_ejection_time),
            max_ejection_percent=wrappers_pb2.UInt32Value(value=int(od.max_ejection_percent)),
        )
        if od.consecutive_5xx_errors is not None:
            o.consecutive_5xx.value = od.consecutive_5xx_errors
            o.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors else 0
        if od.consecutive_gateway_errors is not None:
            o.consecutive_gateway_failure.value = od.consecutive_gateway_errors
            o.enforcing_consecutive_gateway_failure.value = 100
        c.outlier_detection.CopyFrom(o)
    hc = policy.health_check
    if hc is not None:
        c.health_checks.append(
            health_check_pb2.HealthCheck(
                timeout=duration(hc.timeout),
                interval=duration(hc.interval),
                unhealthy_threshold=wrappers_pb2.UInt32Value(value=hc.unhealthy_threshold),
                healthy_threshold=wrappers_pb2.UInt32Value(value=hc.healthy_threshold),
                http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path=hc.path),
            )
        )


def _set_http_options(c: cluster_pb2.Cluster, http2: bool, policy: TrafficPolicy | None) -> None:
    opts = _protocol_options(http2, policy)
    if opts is not None:
        c.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(opts))


def outbound_cluster(
    mesh: Mesh, svc: Service, subset: str = "", tls: UpstreamTls | None = None
) -> cluster_pb2.Cluster:
    """The EDS cluster calling ``svc`` (or one subset), with its DestinationRule policy and TLS."""
    name = outbound_cluster_name(mesh, svc, subset)
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration(1.0),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source(), service_name=name),
    )
    policy = service_policy(mesh, svc, subset)
    _apply_policy(c, policy)
    if svc.protocol != "tcp":
        _set_http_options(c, svc.protocol in ("http2", "grpc"), policy)
    if tls is not None:
        socket = tls(svc)
        if socket is not None:
            c.transport_socket.CopyFrom(socket)
    return c


#: Where a service's endpoints come from: ``(mesh, service, subset) → addresses`` (subset "" = all).
#: The default reads the model's workloads; another discovery source plugs in here.
EndpointSource = Callable[[Mesh, Service, str], Iterable[Address]]


def model_endpoints(mesh: Mesh, svc: Service, subset: str) -> list[Address]:
    """Endpoints from the model: each member workload's sidecar inbound address (or the app's)."""
    members = subset_members(mesh, svc, subset) if subset else svc.workloads
    return [endpoint_address(w) for w in members]


def outbound_endpoints(
    mesh: Mesh, svc: Service, subset: str = "", source: EndpointSource = model_endpoints
) -> endpoint_pb2.ClusterLoadAssignment:
    """The ``ClusterLoadAssignment`` of ``svc`` (or one subset), with addresses from ``source``."""
    return load_assignment(outbound_cluster_name(mesh, svc, subset), source(mesh, svc, subset))


@functools.lru_cache(maxsize=4096)  # a mesh repeats few hosts (127.0.0.1 on every inbound cluster)
def is_ip(host: str) -> bool:
    """True when ``host`` is an IP address literal (not a DNS name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def static_cluster(
    name: str, addresses: Iterable[Address], *, http2: bool = False, connect_timeout: float = 1.0
) -> cluster_pb2.Cluster:
    """A cluster of fixed addresses (inbound apps, extension servers); ``http2`` for gRPC servers.

    STATIC when every host is an IP address; STRICT_DNS (IPv4) when one is a name, e.g. a Kubernetes
    Service's ``envoykit-authz.default.svc.cluster.local`` (Envoy: STATIC endpoints must be IPs).
    """
    addrs = list(addresses)
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC
        if all(is_ip(a.host) for a in addrs)
        else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration(connect_timeout),
        load_assignment=load_assignment(name, addrs),
    )
    if c.type == cluster_pb2.Cluster.STRICT_DNS:
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    _set_http_options(c, http2, None)
    return c


def inbound_cluster(svc: Service, wl: Workload) -> cluster_pb2.Cluster:
    """The local app behind a sidecar."""
    return static_cluster(inbound_cluster_name(svc), [wl.address], http2=svc.protocol in ("http2", "grpc"))


def external_cluster(
    ext: ExternalHost, tls_socket: base_pb2.TransportSocket | None = None
) -> cluster_pb2.Cluster:
    """An allowed external host: STATIC for an IP address, LOGICAL_DNS for a name."""
    addr = ext.address or Address(host=ext.host, port=ext.port)
    c = static_cluster(external_cluster_name(ext), [addr])
    try:
        ipaddress.ip_address(addr.host)
    except ValueError:
        c.type = cluster_pb2.Cluster.LOGICAL_DNS
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    if tls_socket is not None:
        c.transport_socket.CopyFrom(tls_socket)
    return c
