"""Translation of VirtualServices into Envoy route configurations (``envoy.config.route.v3``).

Route configurations served over RDS:

* ``outbound``: shared by every sidecar; one virtual host per mesh service (domains ``name``,
  ``name.namespace``, with or without ``:port``), one per external host allowed by the egress gateway,
  and a catch-all answering 502 (REGISTRY_ONLY: unknown hosts are not reachable);
* ``inbound|<workload>``: a sidecar's local app (``skip_paths`` unchecked by ext_authz);
* ``gateway|<name>``: an ingress gateway's VirtualServices, one virtual host per host;
* ``egress|<name>``: an egress gateway's allow-list, everything else 403.

Sources: Istio VirtualService ``HTTPRoute``; Envoy ``Route``, ``RouteAction``, ``WeightedCluster``,
``RetryPolicy``, ``RateLimit``, ``HashPolicy``.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from envoykit.control.model.mesh import Gateway, Mesh, RateLimitFilter, Service, Workload
from envoykit.control.model.traffic import (
    Destination,
    HeaderOperations,
    HTTPMatchRequest,
    HTTPRoute,
    RouteRateLimit,
    StringMatch,
    VirtualService,
)
from envoykit.control.translate.clusters import (
    external_cluster_name,
    inbound_cluster_name,
    outbound_cluster_name,
    service_host,
)
from envoykit.control.translate.filters import EXT_AUTHZ, FAULT, authz_per_route
from envoykit.control.translate.pb import duration, fraction, pack
from envoykit.core.peer import PEER_HEADER, format_peer

OUTBOUND_ROUTES = "outbound"
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def inbound_routes_name(wl: Workload) -> str:
    """``inbound|<workload>``."""
    return f"inbound|{wl.name}"


def gateway_routes_name(gw: Gateway) -> str:
    """``gateway|<name>`` (ingress) or ``egress|<name>``."""
    return f"{'gateway' if gw.kind == 'ingress' else 'egress'}|{gw.name}"


def string_matcher(m: StringMatch) -> string_pb2.StringMatcher:
    """Istio ``StringMatch`` → Envoy ``StringMatcher`` (regex is RE2, whole-string)."""
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.regex or ""))


def route_match(m: HTTPMatchRequest | None) -> rc.RouteMatch:
    """One Istio match (all conditions hold) → Envoy ``RouteMatch``; no match = every path."""
    out = rc.RouteMatch()
    uri = m.uri if m else None
    if uri is None or uri.prefix is not None:
        out.prefix = uri.prefix if uri and uri.prefix is not None else "/"
    elif uri.exact is not None:
        out.path = uri.exact
    else:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri.regex or ""))
    if m is None:
        return out
    headers = dict(m.headers)
    if m.method is not None:
        headers[":method"] = m.method
    for name, sm in headers.items():
        out.headers.append(rc.HeaderMatcher(name=name, string_match=string_matcher(sm)))
    for name, sm in m.query_params.items():
        out.query_parameters.append(rc.QueryParameterMatcher(name=name, string_match=string_matcher(sm)))
    return out


def destination_cluster(mesh: Mesh, dest: Destination) -> str:
    """The cluster of a VirtualService destination (a service, or one of its subsets)."""
    svc = mesh.service(dest.host)
    if svc is None:  # semantics layer refuses this; keep translation total
        raise ValueError(f"unknown service {dest.host!r}")
    return outbound_cluster_name(mesh, svc, dest.subset or "")


def peer_value(metadata: dict[str, str]) -> str:
    """The ``x-envoykit-peer`` value for a node: ``workload=…,app=…,version=…,namespace=…,
    service_account=…,principal=…,mesh_id=…`` (envoykit's stand-in for Istio's metadata exchange; the
    format is :mod:`envoykit.core.peer`). It labels telemetry: a reporter with a verified peer
    certificate takes the principal from the certificate."""
    return format_peer(metadata)


def peer_header(metadata: dict[str, str]) -> base_pb2.HeaderValueOption:
    """``x-envoykit-peer`` set (overwriting whatever a client sent) to this node's metadata."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=PEER_HEADER, value=peer_value(metadata)), append_action=_OVERWRITE
    )


def _header_options(ops: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    out = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=_OVERWRITE)
        for k, v in ops.set.items()
    ]
    out += [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=_APPEND)
        for k, v in ops.add.items()
    ]
    return out


def rate_limits(items: Iterable[RouteRateLimit]) -> list[rc.RateLimit]:
    """Route ``rate_limits``: each builds one descriptor from its actions in order."""
    out: list[rc.RateLimit] = []
    for item in items:
        actions = []
        for a in item.actions:
            if a.request_headers is not None:
                rh = a.request_headers
                actions.append(
                    rc.RateLimit.Action(
                        request_headers=rc.RateLimit.Action.RequestHeaders(
                            header_name=rh.header_name,
                            descriptor_key=rh.descriptor_key,
                            skip_if_absent=rh.skip_if_absent,
                        )
                    )
                )
            elif a.remote_address is not None:
                actions.append(rc.RateLimit.Action(remote_address=rc.RateLimit.Action.RemoteAddress()))
            elif a.generic_key is not None:
                actions.append(
                    rc.RateLimit.Action(
                        generic_key=rc.RateLimit.Action.GenericKey(
                            descriptor_value=a.generic_key.descriptor_value,
                            descriptor_key=a.generic_key.descriptor_key,
                        )
                    )
                )
        out.append(rc.RateLimit(actions=actions))
    return out


def _hash_policy(mesh: Mesh, dest: Destination) -> list[rc.RouteAction.HashPolicy]:
    dr = mesh.destination_rule(dest.host)
    lb = dr.traffic_policy.load_balancer if dr and dr.traffic_policy else None
    ch = lb.consistent_hash if lb else None
    if ch is None:
        return []
    if ch.http_header_name is not None:
        return [
            rc.RouteAction.HashPolicy(
                header=rc.RouteAction.HashPolicy.Header(header_name=ch.http_header_name)
            )
        ]
    if ch.http_cookie is not None:
        cookie = rc.RouteAction.HashPolicy.Cookie(name=ch.http_cookie.name, path=ch.http_cookie.path or "")
        if ch.http_cookie.ttl is not None:
            cookie.ttl.CopyFrom(duration(ch.http_cookie.ttl))
        return [rc.RouteAction.HashPolicy(cookie=cookie)]
    return [
        rc.RouteAction.HashPolicy(
            connection_properties=rc.RouteAction.HashPolicy.ConnectionProperties(source_ip=True)
        )
    ]


def _route_action(mesh: Mesh, r: HTTPRoute) -> rc.RouteAction:
    action = rc.RouteAction()
    if len(r.route) == 1:
        action.cluster = destination_cluster(mesh, r.route[0].destination)
    else:
        for branch in r.route:
            cw = rc.WeightedCluster.ClusterWeight(name=destination_cluster(mesh, branch.destination))
            cw.weight.value = branch.weight or 0
            action.weighted_clusters.clusters.append(cw)
    action.hash_policy.extend(_hash_policy(mesh, r.route[0].destination))
    if r.timeout is not None:
        action.timeout.CopyFrom(duration(r.timeout))
    if r.retries is not None:
        rp = rc.RetryPolicy(retry_on=r.retries.retry_on)
        rp.num_retries.value = r.retries.attempts
        if r.retries.per_try_timeout is not None:
            rp.per_try_timeout.CopyFrom(duration(r.retries.per_try_timeout))
        if r.retries.backoff is not None:
            rp.retry_back_off.base_interval.CopyFrom(duration(r.retries.backoff.base_interval))
            if r.retries.backoff.max_interval is not None:
                rp.retry_back_off.max_interval.CopyFrom(duration(r.retries.backoff.max_interval))
        action.retry_policy.CopyFrom(rp)
    if r.mirror is not None:
        mp = rc.RouteAction.RequestMirrorPolicy(cluster=destination_cluster(mesh, r.mirror))
        pct = 100.0 if r.mirror_percentage is None else r.mirror_percentage
        mp.runtime_fraction.default_value.CopyFrom(fraction(pct))
        action.request_mirror_policies.append(mp)
    if r.rewrite is not None:
        if r.rewrite.uri is not None:
            action.prefix_rewrite = r.rewrite.uri
        if r.rewrite.authority is not None:
            action.host_rewrite_literal = r.rewrite.authority
    action.rate_limits.extend(rate_limits(r.rate_limits))
    return action


def _fault(r: HTTPRoute) -> fault_pb2.HTTPFault | None:
    if r.fault is None:
        return None
    out = fault_pb2.HTTPFault()
    if r.fault.delay is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(r.fault.delay.fixed_delay), percentage=fraction(r.fault.delay.percentage)
            )
        )
    if r.fault.abort is not None:
        out.abort.CopyFrom(
            fault_pb2.FaultAbort(
                http_status=r.fault.abort.http_status, percentage=fraction(r.fault.abort.percentage)
            )
        )
    return out


def http_routes(mesh: Mesh, r: HTTPRoute) -> list[rc.Route]:
    """One Istio ``HTTPRoute`` → Envoy routes (one per ``match`` entry: Istio ORs them)."""
    template = rc.Route(name=r.name or "")
    if r.direct_response is not None:
        template.direct_response.status = r.direct_response.status
        template.direct_response.body.inline_string = r.direct_response.body
    else:
        template.route.CopyFrom(_route_action(mesh, r))
    if r.headers is not None:
        if r.headers.request is not None:
            template.request_headers_to_add.extend(_header_options(r.headers.request))
            template.request_headers_to_remove.extend(r.headers.request.remove)
        if r.headers.response is not None:
            template.response_headers_to_add.extend(_header_options(r.headers.response))
            template.response_headers_to_remove.extend(r.headers.response.remove)
    fault = _fault(r)
    if fault is not None:
        template.typed_per_filter_config[FAULT].CopyFrom(pack(fault))
    if r.authz is not None:
        per_route = authz_per_route(r.authz.disabled, r.authz.context_extensions)
        template.typed_per_filter_config[EXT_AUTHZ].CopyFrom(pack(per_route))
    out = []
    matches: list[HTTPMatchRequest | None] = list(r.match) or [None]
    for m in matches:
        route = rc.Route()
        route.CopyFrom(template)
        route.match.CopyFrom(route_match(m))
        out.append(route)
    return out


def service_domains(mesh: Mesh, svc: Service) -> list[str]:
    """Authorities that name ``svc``: ``name``, ``name.ns``, ``name.ns.svc`` (ports are stripped)."""
    ns = mesh.ns(svc)
    return [svc.name, f"{svc.name}.{ns}", f"{svc.name}.{ns}.svc"]


def _vs_routes(mesh: Mesh, gateway: str, host_matches: str) -> list[rc.Route] | None:
    routes: list[rc.Route] = []
    found = False
    for vs in mesh.virtual_services:
        if gateway not in vs.gateways or host_matches not in vs.hosts:
            continue
        found = True
        for r in vs.http:
            routes.extend(http_routes(mesh, r))
    return routes if found else None


def _mesh_routes(mesh: Mesh, svc: Service, vs: VirtualService | None) -> list[rc.Route]:
    if vs is not None:
        return [route for r in vs.http for route in http_routes(mesh, r)]
    return [
        rc.Route(
            match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=outbound_cluster_name(mesh, svc))
        )
    ]


def _not_found(name: str, status: int, body: str) -> rc.VirtualHost:
    return rc.VirtualHost(
        name=name,
        domains=["*"],
        routes=[
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(
                    status=status, body=base_pb2.DataSource(inline_string=body)
                ),
            )
        ],
    )


def outbound_route_config(mesh: Mesh) -> route_pb2.RouteConfiguration:
    """``outbound``: every mesh HTTP service, the egress allow-list, and a 502 catch-all."""
    by_service: dict[str, VirtualService] = {}
    for vs in mesh.virtual_services:
        if "mesh" in vs.gateways:
            for h in vs.hosts:
                target = mesh.service(h)
                if target is not None:
                    by_service.setdefault(target.name, vs)
    vhosts = []
    for svc in mesh.services:
        if svc.protocol == "tcp":
            continue
        vhosts.append(
            rc.VirtualHost(
                name=service_host(mesh, svc),
                domains=service_domains(mesh, svc),
                routes=_mesh_routes(mesh, svc, by_service.get(svc.name)),
            )
        )
    for gw in mesh.gateways:
        if gw.kind != "egress":
            continue
        cluster = f"outbound|{gw.address.port}||{gw.name}.{mesh.ns(gw)}"
        for host in sorted({ext.host for ext in gw.allow}):
            vhosts.append(
                rc.VirtualHost(
                    name=f"egress|{host}",
                    domains=[host],
                    routes=[rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=cluster))],
                )
            )
    vhosts.append(
        _not_found("block_all", 502, "envoykit: host is not in the mesh registry (REGISTRY_ONLY)\n")
    )
    return route_pb2.RouteConfiguration(name=OUTBOUND_ROUTES, virtual_hosts=vhosts)


def inbound_route_config(
    mesh: Mesh, svc: Service, wl: Workload, ratelimit: RateLimitFilter | None
) -> route_pb2.RouteConfiguration:
    """``inbound|<workload>``: everything to the local app; ``skip_paths`` skip ext_authz."""
    cluster = inbound_cluster_name(svc)
    authz = svc.extensions.authz
    routes = []
    for prefix in authz.skip_paths if authz else []:
        r = rc.Route(match=rc.RouteMatch(prefix=prefix), route=rc.RouteAction(cluster=cluster))
        r.route.timeout.CopyFrom(duration(0))
        r.typed_per_filter_config[EXT_AUTHZ].CopyFrom(pack(authz_per_route(True, {})))
        routes.append(r)
    main = rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=cluster))
    main.route.timeout.CopyFrom(duration(0))  # the caller's route timeout governs (as Istio's inbound)
    if authz is not None and authz.context_extensions:
        main.typed_per_filter_config[EXT_AUTHZ].CopyFrom(
            pack(authz_per_route(False, authz.context_extensions))
        )
    if ratelimit is not None:
        main.route.rate_limits.extend(rate_limits(ratelimit.rate_limits))
    routes.append(main)
    return route_pb2.RouteConfiguration(
        name=inbound_routes_name(wl),
        virtual_hosts=[rc.VirtualHost(name="inbound", domains=["*"], routes=routes)],
    )


def gateway_route_config(mesh: Mesh, gw: Gateway) -> route_pb2.RouteConfiguration:
    """``gateway|<name>``: the VirtualServices bound to this ingress gateway, one virtual host per host."""
    hosts: list[str] = []
    for vs in mesh.virtual_services:
        if gw.name in vs.gateways:
            hosts += [h for h in vs.hosts if h not in hosts]
    vhosts = []
    for host in sorted(hosts, key=lambda h: h == "*"):  # the catch-all last
        routes = _vs_routes(mesh, gw.name, host) or []
        vhosts.append(rc.VirtualHost(name=host, domains=[host], routes=routes))
    return route_pb2.RouteConfiguration(name=gateway_routes_name(gw), virtual_hosts=vhosts)


def egress_route_config(gw: Gateway) -> route_pb2.RouteConfiguration:
    """``egress|<name>``: allowed external hosts only; everything else 403 (REGISTRY_ONLY).

    An authority without a port matches the first allowed entry of that host.
    """
    vhosts = []
    seen: set[str] = set()
    for ext in gw.allow:
        domains = [f"{ext.host}:{ext.port}"]
        if ext.host not in seen:
            domains.append(ext.host)
            seen.add(ext.host)
        route = rc.Route(
            match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=external_cluster_name(ext))
        )
        if ext.tls:
            route.route.host_rewrite_literal = ext.host
        vhosts.append(rc.VirtualHost(name=f"{ext.host}:{ext.port}", domains=domains, routes=[route]))
    vhosts.append(_not_found("block_all", 403, "envoykit egress: host not allowed (REGISTRY_ONLY)\n"))
    return route_pb2.RouteConfiguration(name=gateway_routes_name(gw), virtual_hosts=vhosts)


def add_authz_context(config: route_pb2.RouteConfiguration, context: dict[str, str]) -> None:
    """Give every route of ``config`` the proxy-wide ext_authz ``context`` (a route's own keys win;
    routes with ext_authz disabled stay disabled)."""
    if not context:
        return
    for vh in config.virtual_hosts:
        for route in vh.routes:
            per_route = ext_authz_pb2.ExtAuthzPerRoute()
            packed = route.typed_per_filter_config.get(EXT_AUTHZ)
            if packed is not None:
                packed.Unpack(per_route)
                if per_route.disabled:
                    continue
            merged = {**context, **dict(per_route.check_settings.context_extensions)}
            route.typed_per_filter_config[EXT_AUTHZ].CopyFrom(pack(authz_per_route(False, merged)))
