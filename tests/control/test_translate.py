"""Translation unit tests: each model feature lands in the Envoy proto field it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import wrappers_pb2

from envoykit.control.model.loader import load_mesh, parse_mesh
from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.model.nodes import mesh_nodes, parse_node_id
from envoykit.control.model.types import Address
from envoykit.control.server import build_snapshots
from envoykit.control.translate.bootstrap import bootstrap
from envoykit.control.translate.mtls import SpiffeMeshTls
from envoykit.control.translate.translation import Translation, translate
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from envoykit.core.accesslog import (
    STATS_HISTOGRAMS,
    STATS_PREFIXES,
    STATS_TAG,
    STATS_TAG_FORMATS,
    TAG,
    TAG_FORMATS,
)

REPO = Path(__file__).resolve().parents[2]


def demo() -> Translation:
    loaded = load_mesh(REPO / "examples" / "mesh.yaml")
    return translate(loaded.mesh, loaded.base_dir, SpiffeMeshTls())


def hcm_of(lst: listener_pb2.Listener, chain: int = 0) -> hcm.HttpConnectionManager:
    out = hcm.HttpConnectionManager()
    lst.filter_chains[chain].filters[0].typed_config.Unpack(out)
    return out


def test_nodes_and_metadata_contract() -> None:
    t = demo()
    assert sorted(t.nodes) == [
        "egress~egress",
        "ingress~ingress",
        "sidecar~backend-v1",
        "sidecar~backend-v2",
        "sidecar~frontend-v1",
    ]
    node = mesh_nodes(t.mesh)["sidecar~backend-v2"]
    assert node.metadata() == {
        "workload": "backend-v2",
        "app": "backend",
        "version": "v2",
        "namespace": "default",
        "service_account": "backend",
        "principal": "spiffe://envoykit.local/ns/default/sa/backend",
        "mesh_id": "envoykit",
        "kind": "sidecar",
    }
    assert parse_node_id("ingress~ingress") == ("ingress", "ingress")
    b = bootstrap(node, Address(port=15010), "tok")
    assert b.node.id == "sidecar~backend-v2" and b.node.cluster == "backend"
    assert b.node.metadata.fields["principal"].string_value.endswith("/sa/backend")
    grpc = b.dynamic_resources.ads_config.grpc_services[0]
    assert (grpc.initial_metadata[0].key, grpc.initial_metadata[0].value) == ("x-envoykit-node-token", "tok")
    assert b.admin.address.socket_address.port_value == 15003


def test_sidecar_resources_canary_and_policies() -> None:
    t = demo()
    cfg = t.nodes["sidecar~frontend-v1"]
    clusters = cfg.resources(CLUSTER)
    assert {"outbound|80||backend.default", "outbound|80|v1|backend.default", "inbound|80||"} <= set(clusters)
    v1 = clusters["outbound|80|v1|backend.default"]
    assert isinstance(v1, cluster_pb2.Cluster)
    assert v1.type == cluster_pb2.Cluster.EDS and v1.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert v1.circuit_breakers.thresholds[0].max_pending_requests.value == 100
    assert v1.outlier_detection.consecutive_5xx.value == 5
    assert v1.transport_socket.name == "envoy.transport_sockets.tls"  # mTLS towards backend
    cla = cfg.resources(ENDPOINT)["outbound|80|v2|backend.default"]
    ports = [e.endpoint.address.socket_address.port_value for e in cla.endpoints[0].lb_endpoints]
    assert ports == [16003]  # backend-v2's sidecar inbound
    outbound = cfg.resources(ROUTE)["outbound"]
    assert isinstance(outbound, route_pb2.RouteConfiguration)
    vh = next(v for v in outbound.virtual_hosts if v.name == "backend.default")
    assert "backend" in vh.domains and "backend.default.svc" in vh.domains
    action = vh.routes[0].route
    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
        ("outbound|80|v1|backend.default", 90),
        ("outbound|80|v2|backend.default", 10),
    ]
    assert action.timeout.seconds == 3 and action.retry_policy.num_retries.value == 2
    assert action.retry_policy.per_try_timeout.seconds == 1
    egress = next(v for v in outbound.virtual_hosts if v.name == "egress|example.com")
    assert egress.routes[0].route.cluster == "outbound|8090||egress.default"
    assert outbound.virtual_hosts[-1].domains == ["*"]
    assert outbound.virtual_hosts[-1].routes[0].direct_response.status == 502


def test_inbound_listener_mtls_and_filter_order() -> None:
    t = demo()
    lst = t.nodes["sidecar~backend-v1"].resources(LISTENER)["inbound"]
    assert isinstance(lst, listener_pb2.Listener)
    assert len(lst.filter_chains) == 1 and lst.filter_chains[0].transport_socket.name  # STRICT
    conf = hcm_of(lst)
    assert [f.name for f in conf.http_filters] == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    authz = ext_authz_pb2.ExtAuthz()
    conf.http_filters[0].typed_config.Unpack(authz)
    assert authz.include_peer_certificate and not authz.failure_mode_allow
    assert authz.grpc_service.envoy_grpc.cluster_name == "ext_authz"
    assert conf.forward_client_cert_details == hcm.HttpConnectionManager.SANITIZE_SET
    routes = t.nodes["sidecar~backend-v1"].resources(ROUTE)["inbound|backend-v1"]
    skip = routes.virtual_hosts[0].routes[0]
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    skip.typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(per_route)
    assert skip.match.prefix == "/healthz" and per_route.disabled


def _access_log(conf: Any) -> Any:
    from envoy.extensions.access_loggers.grpc.v3 import als_pb2

    (entry,) = conf.access_log
    out: Any = (
        als_pb2.HttpGrpcAccessLogConfig()
        if entry.name.endswith("http_grpc")
        else als_pb2.TcpGrpcAccessLogConfig()
    )
    entry.typed_config.Unpack(out)
    return out


def test_every_http_listener_counts_istio_metrics_in_envoy_by_default(tmp_path: Path) -> None:
    from envoy.extensions.access_loggers.file.v3 import file_pb2

    from envoykit.control.translate.accesslog import logger_dict

    t = demo()
    side = t.nodes["sidecar~frontend-v1"]
    lists = {
        "destination": hcm_of(side.resources(LISTENER)["inbound"]).access_log,
        "source": hcm_of(side.resources(LISTENER)["outbound"]).access_log,
        "ingress": hcm_of(t.nodes["ingress~ingress"].resources(LISTENER)["ingress|ingress"]).access_log,
    }
    for key, logs in lists.items():
        reporter = "source" if key == "ingress" else key
        (stats,) = logs  # no JSON file named: the stats logger alone
        assert stats.name == "envoy.access_loggers.stats"
        conf = logger_dict(stats)["typed_config"]
        assert conf["stats_scope"] == {
            "prefix": STATS_PREFIXES[reporter],
            "max_histograms": 3 * AccessLogServer().max_series,
        }
        assert not conf.get("counters")
        for h in conf["histograms"]:
            assert h["stat"]["tags"] == [{"name": STATS_TAG, "value_format": STATS_TAG_FORMATS[reporter]}]
        assert [h["stat"]["name"] for h in conf["histograms"]] == list(STATS_HISTOGRAMS)
    # a JSON file, relative to mesh.yaml's folder, one per node
    loaded = load_mesh(REPO / "examples" / "mesh.yaml")
    mesh = loaded.mesh
    als = mesh.extensions.access_log.model_copy(update={"json_log": "logs/{node}.json"})
    mesh = mesh.model_copy(update={"extensions": mesh.extensions.model_copy(update={"access_log": als})})
    withjson = translate(mesh, tmp_path, SpiffeMeshTls())
    _, file_log = hcm_of(withjson.nodes["sidecar~frontend-v1"].resources(LISTENER)["inbound"]).access_log
    conf = file_pb2.FileAccessLog()
    file_log.typed_config.Unpack(conf)
    assert conf.path == str(tmp_path / "logs" / "sidecar~frontend-v1.json")
    fields = conf.log_format.json_format
    assert fields["reporter"] == "destination" and fields["destination_workload"] == "frontend-v1"
    assert fields["source_principal"] == "%DOWNSTREAM_PEER_URI_SAN%" and fields["status"] == "%RESPONSE_CODE%"


def test_every_listener_streams_its_access_log_to_the_telemetry_server_with_grpc() -> None:
    loaded = load_mesh(REPO / "examples" / "mesh.yaml")
    mesh = loaded.mesh
    als = mesh.extensions.access_log.model_copy(update={"transport": "grpc"})
    mesh = mesh.model_copy(update={"extensions": mesh.extensions.model_copy(update={"access_log": als})})
    t = translate(mesh, loaded.base_dir, SpiffeMeshTls())
    side = t.nodes["sidecar~frontend-v1"]
    assert "envoykit_telemetry" in side.resources(CLUSTER)
    inbound = _access_log(hcm_of(side.resources(LISTENER)["inbound"]))
    outbound = _access_log(hcm_of(side.resources(LISTENER)["outbound"]))
    ingress = _access_log(hcm_of(t.nodes["ingress~ingress"].resources(LISTENER)["ingress|ingress"]))
    assert inbound.common_config.log_name == "envoykit.destination"
    assert outbound.common_config.log_name == ingress.common_config.log_name == "envoykit.source"
    for conf, reporter in ((inbound, "destination"), (outbound, "source"), (ingress, "source")):
        common = conf.common_config
        assert common.grpc_service.envoy_grpc.cluster_name == "envoykit_telemetry"
        assert common.buffer_flush_interval.seconds == 1
        assert common.buffer_size_bytes.value == AccessLogServer().buffer_size_bytes
        # the entry's facts formatted by Envoy into one tag (envoykit.core.accesslog), no headers
        assert [(t.tag, t.value) for t in common.custom_tags] == [(TAG, TAG_FORMATS[reporter])]
        assert not conf.additional_request_headers_to_log


def test_tcp_proxies_log_on_connect_and_access_logs_can_be_turned_off() -> None:
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    doc = """
services:
  - name: db
    protocol: tcp
    mtls: DISABLE
    workloads:
      - {name: db-v1, address: 127.0.0.1:9001, sidecar: {inbound: 127.0.0.1:9101, outbound: 127.0.0.1:9201, admin: 127.0.0.1:9301}}
  - name: app
    mtls: DISABLE
    workloads:
      - name: app-v1
        address: 127.0.0.1:9002
        sidecar: {inbound: 127.0.0.1:9102, outbound: 127.0.0.1:9202, admin: 127.0.0.1:9302, outbound_tcp: {db: 127.0.0.1:9402}}
"""
    t = translate(parse_mesh(doc), ".")
    for node, name, reporter in (
        ("sidecar~db-v1", "inbound", "destination"),
        ("sidecar~app-v1", "outbound_tcp|db", "source"),
    ):
        lst = t.nodes[node].resources(LISTENER)[name]
        proxy = tcp_proxy_pb2.TcpProxy()
        lst.filter_chains[0].filters[0].typed_config.Unpack(proxy)
        assert proxy.access_log_options.flush_access_log_on_connected
        assert proxy.access_log_options.access_log_flush_interval.seconds == 5  # bytes while open
        assert _access_log(proxy).common_config.log_name == f"envoykit.{reporter}"
    off = translate(parse_mesh("extensions: {access_log: {enabled: false}}\n" + doc), ".")
    assert "envoykit_telemetry" not in off.nodes["sidecar~app-v1"].resources(CLUSTER)
    assert not hcm_of(off.nodes["sidecar~app-v1"].resources(LISTENER)["outbound"]).access_log
    never = translate(parse_mesh("extensions: {access_log: {tcp_flush_interval: null}}\n" + doc), ".")
    proxy = tcp_proxy_pb2.TcpProxy()
    never.nodes["sidecar~db-v1"].resources(LISTENER)["inbound"].filter_chains[0].filters[
        0
    ].typed_config.Unpack(proxy)
    assert proxy.access_log_options.flush_access_log_on_connected
    assert not proxy.access_log_options.HasField("access_log_flush_interval")


def test_permissive_uses_tls_inspector_and_two_chains() -> None:
    text = (REPO / "examples" / "mesh.yaml").read_text().replace("mtls: STRICT", "mtls: PERMISSIVE")
    t = translate(parse_mesh(text), REPO / "examples", SpiffeMeshTls())
    lst = t.nodes["sidecar~backend-v1"].resources(LISTENER)["inbound"]
    assert [c.filter_chain_match.transport_protocol for c in lst.filter_chains] == ["tls", "raw_buffer"]
    assert lst.listener_filters[0].name == "envoy.filters.listener.tls_inspector"


def test_ingress_extensions_rate_limits_and_wasm() -> None:
    t = demo()
    cfg = t.nodes["ingress~ingress"]
    lst = cfg.resources(LISTENER)["ingress|ingress"]
    conf = hcm_of(lst)
    names = [f.name for f in conf.http_filters]
    assert names == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.fault",
        "envoykit.wasm.add-header",
        "envoy.filters.http.router",
    ]
    assert conf.use_remote_address.value
    rl = rate_limit_pb2.RateLimit()
    conf.http_filters[1].typed_config.Unpack(rl)
    assert rl.domain == "envoykit" and not rl.failure_mode_deny
    assert rl.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "rate_limit_service"
    wasm = wasm_pb2.Wasm()
    conf.http_filters[3].typed_config.Unpack(wasm)
    assert wasm.config.root_id == "add_header"
    assert wasm.config.vm_config.runtime == "envoy.wasm.runtime.v8"
    assert wasm.config.vm_config.code.local.filename == str(REPO / "examples" / "wasm" / "add_header.wasm")
    conf_value = wrappers_pb2.StringValue()
    wasm.config.configuration.Unpack(conf_value)
    assert conf_value.value == "x-envoykit-wasm: add_header"
    routes = cfg.resources(ROUTE)["gateway|ingress"]
    health, front = routes.virtual_hosts[0].routes
    assert health.match.path == "/healthz" and health.direct_response.status == 200
    action = front.route.rate_limits[0].actions[0].request_headers
    assert (action.header_name, action.descriptor_key, action.skip_if_absent) == (
        "x-client-id",
        "client_id",
        True,
    )
    assert {"ext_authz", "rate_limit_service", "envoykit_telemetry"} <= set(cfg.resources(CLUSTER))


def test_fault_mirror_hash_and_egress() -> None:
    mesh = parse_mesh(
        """
services:
  - name: api
    workloads: [{name: api-v1, address: 127.0.0.1:9001}, {name: api-v2, version: v2, address: 127.0.0.1:9002}]
gateways:
  - {name: in, kind: ingress, address: 127.0.0.1:8080, admin: 127.0.0.1:15000}
  - name: out
    kind: egress
    address: 127.0.0.1:8090
    admin: 127.0.0.1:15001
    allow: [{host: api.example.com, port: 443, tls: true}, {host: 10.1.2.3, port: 8080}]
destination_rules:
  - {name: api, host: api, traffic_policy: {load_balancer: {consistent_hash: {http_cookie: {name: sid, ttl: 1h}}}}}
virtual_services:
  - name: in
    hosts: ["*"]
    gateways: [in]
    http:
      - route: [{destination: {host: api, subset: v1}}]
        fault: {delay: {fixed_delay: 100ms, percentage: 12.5}, abort: {http_status: 503, percentage: 0.1}}
        mirror: {host: api, subset: v2}
        mirror_percentage: 25
"""
    )
    t = translate(mesh)
    route = t.nodes["ingress~in"].resources(ROUTE)["gateway|in"].virtual_hosts[0].routes[0]
    fault = fault_pb2.HTTPFault()
    route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.delay.percentage.numerator == 125_000 and fault.abort.percentage.numerator == 1_000
    assert fault.delay.fixed_delay.nanos == 100_000_000
    mirror = route.route.request_mirror_policies[0]
    assert mirror.cluster == "outbound|80|v2|api.default"
    assert mirror.runtime_fraction.default_value.numerator == 250_000
    assert (
        route.route.hash_policy[0].cookie.name == "sid"
        and route.route.hash_policy[0].cookie.ttl.seconds == 3600
    )
    clusters = t.nodes["ingress~in"].resources(CLUSTER)
    assert clusters["outbound|80||api.default"].lb_policy == cluster_pb2.Cluster.RING_HASH
    egress = t.nodes["egress~out"]
    ext = egress.resources(CLUSTER)
    assert ext["external|443||api.example.com"].type == cluster_pb2.Cluster.LOGICAL_DNS
    assert ext["external|8080||10.1.2.3"].type == cluster_pb2.Cluster.STATIC
    vhosts = egress.resources(ROUTE)["egress|out"].virtual_hosts
    assert vhosts[-1].routes[0].direct_response.status == 403


def test_shared_groups_are_packed_once_and_versions_track_content() -> None:
    t = demo()
    snaps = build_snapshots(t)
    a = snaps["sidecar~backend-v1"].get(CLUSTER).parts[0]
    b = snaps["sidecar~frontend-v1"].get(CLUSTER).parts[0]
    assert a is b  # mesh clusters shared between sidecars
    again = build_snapshots(demo())
    assert {n: s.get(ROUTE).version for n, s in again.items()} == {
        n: s.get(ROUTE).version for n, s in snaps.items()
    }
    text = (
        (REPO / "examples" / "mesh.yaml")
        .read_text()
        .replace("weight: 90", "weight: 80")
        .replace("weight: 10", "weight: 20")
    )
    changed = build_snapshots(translate(parse_mesh(text), REPO / "examples", SpiffeMeshTls()))
    node = "sidecar~frontend-v1"
    assert changed[node].get(ROUTE).version != snaps[node].get(ROUTE).version
    assert changed[node].get(CLUSTER).version == snaps[node].get(CLUSTER).version


def test_user_processors_are_wired_with_their_modes() -> None:
    from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2

    mesh = parse_mesh(
        """
extensions:
  processors:
    - {name: redact, address: 127.0.0.1:9400, request_body_mode: BUFFERED, response_header_mode: SKIP}
services:
  - name: api
    extensions: {processors: [redact], telemetry: true}
    workloads:
      - {name: api-v1, address: 127.0.0.1:9001, sidecar: {inbound: 127.0.0.1:9101, outbound: 127.0.0.1:9201, admin: 127.0.0.1:9301}}
"""
    )
    cfg = translate(mesh, ".", SpiffeMeshTls()).nodes["sidecar~api-v1"]
    assert {"ext_proc|redact", "ext_proc_telemetry"} <= set(cfg.resources(CLUSTER))
    conf = hcm_of(cfg.resources(LISTENER)["inbound"])
    assert [f.name for f in conf.http_filters] == [
        "envoykit.telemetry",
        "envoykit.processor.redact",
        "envoy.filters.http.router",
    ]
    proc = ext_proc_pb2.ExternalProcessor()
    conf.http_filters[1].typed_config.Unpack(proc)
    mode = processing_mode_pb2.ProcessingMode
    assert proc.processing_mode.request_body_mode == mode.BUFFERED
    assert proc.processing_mode.response_header_mode == mode.SKIP
    assert proc.grpc_service.envoy_grpc.cluster_name == "ext_proc|redact"
    assert (proc.grpc_service.initial_metadata[0].key, proc.grpc_service.initial_metadata[0].value) == (
        "x-envoykit-processors",
        "redact",
    )
    assert not proc.failure_mode_allow and not proc.observability_mode


def test_endpoints_can_come_from_another_discovery_source() -> None:
    t0 = demo()
    mesh = t0.mesh

    def registry(m: Any, svc: Any, subset: str) -> list[Address]:
        return [Address(host="10.0.0.7", port=8443)] if svc.name == "backend" else []

    t = translate(mesh, REPO / "examples", SpiffeMeshTls(), endpoints=registry)
    cla = t.nodes["sidecar~frontend-v1"].resources(ENDPOINT)["outbound|80|v1|backend.default"]
    (lb,) = cla.endpoints[0].lb_endpoints
    assert (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value) == (
        "10.0.0.7",
        8443,
    )


def test_peer_labels_travel_in_x_envoykit_peer() -> None:
    from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2

    t = demo()
    node = t.nodes["sidecar~frontend-v1"]
    want = (
        "workload=frontend-v1,app=frontend,version=v1,namespace=default,service_account=frontend,"
        "principal=spiffe://envoykit.local/ns/default/sa/frontend,mesh_id=envoykit"
    )
    inbound = node.resources(ROUTE)["inbound|frontend-v1"]
    assert [(h.header.key, h.header.value) for h in inbound.response_headers_to_add] == [
        ("x-envoykit-peer", want)
    ]
    outbound = hcm_of(node.resources(LISTENER)["outbound"])
    assert outbound.http_filters[0].name == "envoy.filters.http.header_mutation"
    mut = header_mutation_pb2.HeaderMutation()
    outbound.http_filters[0].typed_config.Unpack(mut)
    header = mut.mutations.request_mutations[0].append.header
    assert (header.key, header.value) == ("x-envoykit-peer", want)
    ingress_routes = next(iter(t.nodes["ingress~ingress"].resources(ROUTE).values()))
    assert any(h.header.key == "x-envoykit-peer" for h in ingress_routes.request_headers_to_add)
