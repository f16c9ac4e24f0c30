"""Traffic management in the mesh model: VirtualService and DestinationRule, as Istio users know them.

A :class:`VirtualService` says how requests for some hosts are routed (matches, weighted splits,
timeouts, retries, faults, mirroring, header rewrites) on the sidecars (``gateways: [mesh]``) and/or on
gateways. A :class:`DestinationRule` says how a service is called (load balancer, connection pool and
circuit breaking, outlier detection, active health checks) and names its subsets.

Sources: Istio's ``networking.istio.io/v1`` VirtualService and DestinationRule reference; the Envoy
counterparts are named on each field's class.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from envoykit.control.model.types import Duration, Name, Percent, Strict, StringMatch


class Destination(Strict):
    """Where a route sends traffic: a mesh service (``host``), optionally one subset and port."""

    host: str
    subset: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class RouteDestination(Strict):
    """One branch of a (weighted) split; weights of a route's branches must sum to 100."""

    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=100)


class HTTPMatchRequest(Strict):
    """Conditions that must all hold (Envoy ``RouteMatch``): path, headers, query parameters, method."""

    uri: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    query_params: dict[str, StringMatch] = {}
    method: StringMatch | None = None


class RetryBackoff(Strict):
    """Envoy ``RetryPolicy.retry_back_off``: exponential back-off between retries."""

    base_interval: Duration = 0.025
    max_interval: Duration | None = None


class HTTPRetry(Strict):
    """Envoy ``RetryPolicy``: ``attempts`` retries after the first try, each under ``per_try_timeout``.

    ``retry_on`` is Envoy's ``x-envoy-retry-on`` list (``5xx``, ``gateway-error``, ``connect-failure``,
    ``retriable-4xx``, ``reset``, ``refused-stream``, ...).
    """

    attempts: int = Field(ge=0, le=100)
    per_try_timeout: Duration | None = None
    retry_on: str = "5xx,connect-failure,refused-stream"
    backoff: RetryBackoff | None = None


class FaultDelay(Strict):
    """Envoy ``FaultDelay``: delay ``percentage`` % of requests by ``fixed_delay``."""

    fixed_delay: Duration
    percentage: Percent = 100


class FaultAbort(Strict):
    """Envoy ``FaultAbort``: answer ``percentage`` % of requests with ``http_status``, upstream not called."""

    http_status: int = Field(ge=200, le=599)
    percentage: Percent = 100


class HTTPFaultInjection(Strict):
    """Envoy ``envoy.extensions.filters.http.fault.v3.HTTPFault`` per route."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HeaderOperations(Strict):
    """Set (overwrite), add (append) or remove headers (Envoy ``*_headers_to_add``, ``*_to_remove``)."""

    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(Strict):
    """Header rewrites on the request (towards upstream) and on the response (towards downstream)."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRewrite(Strict):
    """``uri`` replaces the matched prefix (Envoy ``prefix_rewrite``); ``authority`` the Host header."""

    uri: str | None = None
    authority: str | None = None


class RouteAuthz(Strict):
    """Per-route ext_authz (Envoy ``ExtAuthzPerRoute``): ``disabled`` or extra ``context_extensions``."""

    disabled: bool = False
    context_extensions: dict[str, str] = {}


class RequestHeadersAction(Strict):
    """Descriptor entry ``descriptor_key = <header_name's value>`` (Envoy ``Action.RequestHeaders``)."""

    header_name: str
    descriptor_key: str
    skip_if_absent: bool = False


class GenericKeyAction(Strict):
    """Descriptor entry ``descriptor_key = descriptor_value`` (Envoy ``RateLimit.Action.GenericKey``)."""

    descriptor_value: str
    descriptor_key: str = "generic_key"


class RateLimitAction(Strict):
    """One of ``request_headers``, ``remote_address`` (``remote_address = <client IP>``), ``generic_key``."""

    request_headers: RequestHeadersAction | None = None
    remote_address: dict[str, str] | None = None
    generic_key: GenericKeyAction | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RateLimitAction:
        given = [
            k for k in ("request_headers", "remote_address", "generic_key") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of request_headers, remote_address, generic_key")
        return self


class RouteRateLimit(Strict):
    """One descriptor for the rate-limit service, built from ``actions`` in order (Envoy ``RateLimit``)."""

    actions: list[RateLimitAction] = Field(min_length=1)


class HTTPRoute(Strict):
    """One route of a VirtualService: the first route whose ``match`` holds wins (no match = all requests).

    Exactly one of ``route`` (destinations, optionally weighted) or ``direct_response`` is given.
    """

    name: str | None = None
    match: list[HTTPMatchRequest] = []
    route: list[RouteDestination] = []
    direct_response: DirectResponse | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    rewrite: HTTPRewrite | None = None
    headers: Headers | None = None
    authz: RouteAuthz | None = None
    rate_limits: list[RouteRateLimit] = []

    @model_validator(mode="after")
    def _route_or_response(self) -> HTTPRoute:
        if bool(self.route) == (self.direct_response is not None):
            raise ValueError("give either route (destinations) or direct_response")
        return self


class DirectResponse(Strict):
    """Envoy ``DirectResponseAction``: answer with ``status`` and ``body`` without calling upstream."""

    status: int = Field(ge=200, le=599)
    body: str = ""


class VirtualService(Strict):
    """Routing rules for ``hosts`` on ``gateways`` (``mesh`` = every sidecar's outbound side).

    ``hosts`` are mesh service names for ``mesh``; on a gateway they are the request authorities the
    gateway answers (``*`` for all).
    """

    name: Name
    hosts: list[str] = Field(min_length=1)
    gateways: list[str] = ["mesh"]
    http: list[HTTPRoute] = Field(min_length=1)


class ConsistentHash(Strict):
    """Envoy ``RING_HASH`` with a route ``hash_policy``: exactly one of header, cookie, source IP."""

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> ConsistentHash:
        given = [self.http_header_name is not None, self.http_cookie is not None, self.use_source_ip]
        if sum(given) != 1:
            raise ValueError("give exactly one of http_header_name, http_cookie, use_source_ip")
        return self


class HTTPCookie(Strict):
    """Hash on a cookie; with ``ttl`` Envoy sets it when absent (``RouteAction.HashPolicy.Cookie``)."""

    name: str
    ttl: Duration | None = None
    path: str | None = None


class LoadBalancerSettings(Strict):
    """``simple`` (Envoy ``Cluster.lb_policy``) or ``consistent_hash`` (ring hash)."""

    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"] | None = None
    consistent_hash: ConsistentHash | None = None

    @model_validator(mode="after")
    def _one_of(self) -> LoadBalancerSettings:
        if (self.simple is None) == (self.consistent_hash is None):
            raise ValueError("give exactly one of simple, consistent_hash")
        return self


class TCPSettings(Strict):
    """Envoy ``CircuitBreakers.Thresholds.max_connections`` and ``Cluster.connect_timeout``."""

    max_connections: int | None = Field(default=None, ge=1)
    connect_timeout: Duration | None = None


class HTTPSettings(Strict):
    """Circuit-breaking thresholds (Envoy ``CircuitBreakers.Thresholds``) and per-connection limits."""

    http1_max_pending_requests: int | None = Field(default=None, ge=1)
    http2_max_requests: int | None = Field(default=None, ge=1)
    max_requests_per_connection: int | None = Field(default=None, ge=1)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: Duration | None = None


class ConnectionPoolSettings(Strict):
    """Istio's ``connectionPool``: limits that make Envoy reject (503, ``x-envoy-overloaded``) past them."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Strict):
    """Envoy ``Cluster.outlier_detection``: eject an endpoint after consecutive errors."""

    consecutive_5xx_errors: int | None = Field(default=5, ge=0)
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    interval: Duration = 10.0
    base_ejection_time: Duration = 30.0
    max_ejection_percent: Percent = 10


class HealthCheck(Strict):
    """Active HTTP health checking (Envoy ``HealthCheck.HttpHealthCheck``); not an Istio field."""

    path: str = "/healthz"
    interval: Duration = 5.0
    timeout: Duration = 1.0
    unhealthy_threshold: int = Field(default=2, ge=1)
    healthy_threshold: int = Field(default=1, ge=1)


class TrafficPolicy(Strict):
    """How calls to a destination are made (Istio ``TrafficPolicy``) plus envoykit's ``health_check``."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None


class Subset(Strict):
    """A named group of a service's workloads selected by ``labels`` (each workload has ``version``)."""

    name: Name
    labels: dict[str, str] = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None


class DestinationRule(Strict):
    """Policy for calling ``host`` (a mesh service). Without ``subsets``, each workload version is one."""

    name: Name
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []


HTTPRoute.model_rebuild()
ConsistentHash.model_rebuild()
