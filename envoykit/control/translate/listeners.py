"""Translation into Envoy listeners (``envoy.config.listener.v3.Listener``).

* ``inbound``: a sidecar's mesh-facing listener (``sidecar.inbound``): mTLS per the service's mode
  (STRICT: TLS with client certificate required; PERMISSIVE: a ``tls_inspector`` picks the TLS chain
  or the plaintext one; DISABLE: plaintext), the extension filters, routes ``inbound|<workload>``;
  the app gets ``x-forwarded-client-cert`` naming the caller's SPIFFE ID.
* ``outbound``: where the app sends its calls (``sidecar.outbound``), routes ``outbound``.
* ``gateway``: an ingress gateway (optional TLS termination with a given certificate) or an egress one.

Sources: Envoy ``HttpConnectionManager`` (``rds``, ``forward_client_cert_details``,
``use_remote_address``, ``normalize_path``, ``merge_slashes``, ``path_with_escaped_slashes_action``), ``FilterChainMatch.transport_protocol``, ``tls_inspector``, ``tcp_proxy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from envoykit.control.model.mesh import Gateway, Service
from envoykit.control.model.types import Address
from envoykit.control.translate.clusters import is_ip
from envoykit.control.translate.pb import ads_source, duration, pack, socket_address

HCM = "envoy.filters.network.http_connection_manager"
TLS_SOCKET = "envoy.transport_sockets.tls"

#: Builds the downstream (server-side) mTLS transport socket of a sidecar's service or an egress gateway.
DownstreamTls = Callable[["Service | Gateway"], "base_pb2.TransportSocket"]


def http_connection_manager(
    stat_prefix: str,
    route_config_name: str,
    http_filters: list[hcm.HttpFilter],
    *,
    use_remote_address: bool = False,
    forward_client_cert: bool = False,
    strip_any_host_port: bool = True,
    stream_idle_timeout: float | None = None,
    access_log: Sequence[accesslog_pb2.AccessLog] = (),
) -> lc.Filter:
    """The HCM network filter with routes over RDS (ADS), ``http_filters`` (router included) and
    ``access_log`` (the telemetry loggers)."""
    conf = hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(config_source=ads_source(), route_config_name=route_config_name),
        http_filters=http_filters,
        strip_any_host_port=strip_any_host_port,
        # One path for every filter and the upstream: RFC 3986 normalisation, merged slashes,
        # %2F/%5C decoded — what envoykit.authz matches policies against (docs/authz.md).
        merge_slashes=True,
        path_with_escaped_slashes_action=hcm.HttpConnectionManager.UNESCAPE_AND_FORWARD,
        access_log=list(access_log),
    )
    conf.normalize_path.value = True
    conf.use_remote_address.value = use_remote_address
    if forward_client_cert:
        conf.forward_client_cert_details = hcm.HttpConnectionManager.SANITIZE_SET
        conf.set_current_client_cert_details.uri = True
    if stream_idle_timeout is not None:
        conf.stream_idle_timeout.CopyFrom(duration(stream_idle_timeout))
    return lc.Filter(name=HCM, typed_config=pack(conf))


def tcp_proxy(
    stat_prefix: str,
    cluster: str,
    access_log: Sequence[accesslog_pb2.AccessLog] = (),
    flush_interval: float | None = None,
) -> lc.Filter:
    """A ``tcp_proxy`` network filter to ``cluster``; with ``access_log``, an entry is also logged when
    the upstream connects (``access_log_options.flush_access_log_on_connected``: opened connections
    are counted while they live) and every ``flush_interval`` seconds while the connection is open
    (``access_log_options.access_log_flush_interval``: its bytes are counted while it lives)."""
    conf = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster, access_log=list(access_log))
    if access_log:
        conf.access_log_options.flush_access_log_on_connected = True
        if flush_interval:
            conf.access_log_options.access_log_flush_interval.CopyFrom(duration(flush_interval))
    return lc.Filter(name="envoy.filters.network.tcp_proxy", typed_config=pack(conf))


def listener(
    name: str, address: Address, chains: list[lc.FilterChain], *, inbound: bool = False
) -> listener_pb2.Listener:
    """A listener on ``address`` with ``chains`` (a tls_inspector is added when a chain matches on TLS).

    ``traffic_direction`` is INBOUND for a sidecar's inbound side, else OUTBOUND (telemetry's reporter).
    """
    out = listener_pb2.Listener(
        name=name,
        address=socket_address(address),
        filter_chains=chains,
        traffic_direction=base_pb2.INBOUND if inbound else base_pb2.OUTBOUND,
    )
    if any(c.filter_chain_match.transport_protocol for c in chains):
        out.listener_filters.append(
            lc.ListenerFilter(
                name="envoy.filters.listener.tls_inspector",
                typed_config=pack(tls_inspector_pb2.TlsInspector()),
            )
        )
    return out


def mtls_chains(
    mode: str, network_filter: lc.Filter, svc: Service | Gateway, downstream_tls: DownstreamTls | None
) -> list[lc.FilterChain]:
    """Filter chains for a mesh-facing listener under mTLS ``mode`` (STRICT, PERMISSIVE, DISABLE).

    Raises:
        ValueError: STRICT/PERMISSIVE without a TLS builder (the CA is not configured).
    """
    plain = lc.FilterChain(name="plaintext", filters=[network_filter])
    if mode == "DISABLE":
        return [plain]
    if downstream_tls is None:
        raise ValueError(f"{svc.name}: mtls {mode} needs the mesh CA (no TLS builder given)")
    tls = lc.FilterChain(name="mtls", filters=[network_filter], transport_socket=downstream_tls(svc))
    if mode == "STRICT":
        return [tls]
    tls.filter_chain_match.transport_protocol = "tls"
    plain.filter_chain_match.transport_protocol = "raw_buffer"
    return [tls, plain]


def ingress_tls_socket(cert_file: str, key_file: str) -> base_pb2.TransportSocket:
    """TLS termination with a certificate chain and key read by Envoy from files."""
    ctx = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(filename=cert_file),
                    private_key=base_pb2.DataSource(filename=key_file),
                )
            ]
        )
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(ctx))


def origination_tls_socket(host: str, ca_file: str) -> base_pb2.TransportSocket:
    """Client TLS towards an external host: SNI ``host``, server verified against ``ca_file`` and
    required to name ``host`` (DNS SAN)."""
    validation = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(filename=ca_file),
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.DNS, matcher=string_pb2.StringMatcher(exact=host)
            )
        ],
    )
    ctx = tls_pb2.UpstreamTlsContext(
        sni=host, common_tls_context=tls_pb2.CommonTlsContext(validation_context=validation)
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(ctx))


def gateway_listener(
    gw: Gateway,
    network_filter: lc.Filter,
    tls: base_pb2.TransportSocket | None,
    downstream_tls: DownstreamTls | None = None,
) -> listener_pb2.Listener:
    """The listener of a gateway on ``gw.address``: TLS-terminating when ``tls`` is given (ingress),
    mesh mTLS per ``gw.mtls`` (egress). A gateway whose host is a DNS name (how sidecars reach it, e.g.
    its Kubernetes Service) listens on every interface (``0.0.0.0``) at that port."""
    bind = gw.address
    if not is_ip(bind.host):
        bind = Address(host="0.0.0.0", port=bind.port)
    if gw.kind == "egress":
        chains = mtls_chains(gw.mtls, network_filter, gw, downstream_tls)
        return listener(f"{gw.kind}|{gw.name}", bind, chains)
    chain = lc.FilterChain(name=gw.kind, filters=[network_filter])
    if tls is not None:
        chain.transport_socket.CopyFrom(tls)
    return listener(f"{gw.kind}|{gw.name}", bind, [chain])
