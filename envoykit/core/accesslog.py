"""The access-log contract: what the control plane asks Envoy to log and the telemetry server reads.

Envoy's gRPC access loggers (``envoy.access_loggers.http_grpc`` / ``tcp_grpc``,
``envoy.extensions.access_loggers.grpc.v3``) stream ``StreamAccessLogsMessage`` batches; both sides
agree here on:

* ``log_name`` → reporter: a sidecar's inbound side logs as :data:`LOG_NAMES` ``["destination"]``,
  its outbound side and the gateways as ``["source"]`` (Istio's ``reporter`` label);
* the ``custom_tags`` entry (``CustomTag.value``: Envoy's substitution formatter, in C++) into which
  the control plane's HTTP loggers format each entry's facts, so the server reads one string per entry
  instead of some thirty proto fields (:data:`TAG`, :data:`TAG_FORMATS`);
* for loggers without that tag (an Envoy configured by Istio through ``envoykit.k8s``, or by hand),
  the request/response headers and trailers the entry must carry (the peer header, ``content-type``
  to tell gRPC, ``grpc-status``, trace ids): the server then reads the proto fields;
* Istio-shaped cluster names, from which the source reporter learns the destination service:
  ``outbound|<port>|<subset>|<name>.<namespace>`` and ``external|<port>||<host>``.
"""

from __future__ import annotations

from typing import NamedTuple

from envoykit.core.peer import PEER_HEADER

#: reporter (Istio's label value) → the ``log_name`` of the access logger reporting it.
LOG_NAMES = {"destination": "envoykit.destination", "source": "envoykit.source"}
_REPORTERS = {v: k for k, v in LOG_NAMES.items()}

#: ``HttpGrpcAccessLogConfig.additional_request_headers_to_log``.
REQUEST_HEADERS = (PEER_HEADER, "content-type", "traceparent", "x-b3-traceid")
#: ``additional_response_headers_to_log`` (``grpc-status`` here for trailers-only gRPC answers).
RESPONSE_HEADERS = (PEER_HEADER, "grpc-status")
#: ``additional_response_trailers_to_log``.
RESPONSE_TRAILERS = ("grpc-status",)

# One tag, ``TAG``: five parts separated by a carriage return, which no header value can hold (nor
# Envoy's own tokens); a missing value is formatted as ''.
#: ``CustomTag.tag`` of the entry's facts; its value is ``TAG_FORMATS[reporter]``.
TAG = "envoykit"
#: Part 1, the facts that decide an entry's labels (the same string, the same labels), newline-separated:
#: code, flags, content-type, grpc-status (trailer, header), then inbound the peer certificate's URI
#: SANs and the peer header, outbound the upstream cluster, the authority and the peer header
#: (response's). The peer header comes last: it alone is the peer's to write.
_KEY = {
    "destination": f"%DOWNSTREAM_PEER_URI_SAN%\n%REQ({PEER_HEADER})%",
    "source": f"%UPSTREAM_CLUSTER%\n%REQ(:authority)%\n%RESP({PEER_HEADER})%",
}
_KEY_COMMON = (
    "%RESPONSE_CODE%\n%RESPONSE_FLAGS%\n%REQ(content-type)%\n%TRAILER(grpc-status)%\n%RESP(grpc-status)%\n"
)
#: Part 2, space-separated: start time (ISO 8601 UTC, ms), protocol, µs from the request's first byte
#: to the response's last byte, the whole duration in ms (for a stream without a response), µs from
#: the request's last byte upstream to the response's first byte back.
_TIMES = (
    "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)% %PROTOCOL% %COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)% "
    "%DURATION% %COMMON_DURATION(US_TX_END:US_RX_BEG:us)%"
)
#: Part 3, space-separated: request headers and body bytes, response headers and body bytes.
_SIZES = "%REQUEST_HEADERS_BYTES% %BYTES_RECEIVED% %RESPONSE_HEADERS_BYTES% %BYTES_SENT%"
#: Part 4: ``traceparent`` and ``x-b3-traceid``, newline-separated.
_TRACE = "%REQ(traceparent)%\n%REQ(x-b3-traceid)%"
#: Part 5: the JSON line's strings as a JSON fragment with Envoy's values spliced in raw. The server
#: uses it as is only when it holds exactly the quotes of this format and nothing that JSON escapes
#: (so no value can break out of its string); otherwise it writes those fields from the proto fields.
TEXT_FORMAT = (
    '"method":"%REQ(:method)%","authority":"%REQ(:authority)%","path":"%REQ(:path)%",'
    '"request_id":"%REQ(x-request-id)%","user_agent":"%REQ(user-agent)%",'
    '"response_code_details":"%RESPONSE_CODE_DETAILS%","upstream_cluster":"%UPSTREAM_CLUSTER%",'
    '"upstream_host":"%UPSTREAM_HOST%","downstream_remote_address":"%DOWNSTREAM_REMOTE_ADDRESS%"'
)
#: reporter → the ``CustomTag.value`` (a substitution format) of :data:`TAG`.
TAG_FORMATS = {
    reporter: "\r".join((_KEY_COMMON + key, _TIMES, _SIZES, _TRACE, TEXT_FORMAT))
    for reporter, key in _KEY.items()
}

#: Istio's service host suffix: ``destination_service`` is ``<name>.<namespace>.svc.cluster.local``.
SERVICE_DOMAIN = "svc.cluster.local"


def reporter_of(log_name: str) -> str:
    """The reporter (``destination``, ``source``) for a logger's ``log_name``; ``unknown`` otherwise."""
    return _REPORTERS.get(log_name, "unknown")


class ClusterName(NamedTuple):
    """The parts of an Istio-shaped cluster name (``direction|port|subset|host``)."""

    direction: str
    port: str
    subset: str
    host: str


def parse_cluster_name(name: str) -> ClusterName | None:
    """``"outbound|80|v1|backend.default"`` → ``ClusterName("outbound", "80", "v1", "backend.default")``;
    None for names of another shape (``ext_authz``, ``inbound|80||`` has an empty host)."""
    parts = name.split("|")
    if len(parts) != 4:
        return None
    return ClusterName(*parts)


def service_fqdn(name: str, namespace: str) -> str:
    """``("backend", "default")`` → ``"backend.default.svc.cluster.local"`` (Istio's ``destination_service``)."""
    return f"{name}.{namespace}.{SERVICE_DOMAIN}"


# -- the stats transport (``envoy.access_loggers.stats``) ---------------------------------------
#
# Envoy counts each request into its own stats (``extensions.access_loggers.stats.v3.Config``); the
# telemetry server reads them from Envoy's admin (``/stats/prometheus``) and labels them as Istio does.
# Only facts whose values the mesh bounds become tags (codes, flags, gRPC status, the peer
# certificate's URI SAN, the control plane's cluster names, the peer header its sidecars overwrite);
# every stat lives in a scope whose ``max_histograms`` the control plane sets, so a
# value the mesh did not bound cannot grow Envoy's memory beyond that.

#: reporter → the stats scope's ``prefix`` (Envoy's stat names ``envoykit_<reporter>.<STATS_*>``).
STATS_PREFIXES = {"destination": "envoykit_destination", "source": "envoykit_source"}
#: The histograms each HTTP logger keeps, with the substitution command of each value. No counter: the
#: duration histogram's count is the request count, so counts and histograms come from the same merge
#: of Envoy's worker threads (its stats flush), and Envoy keeps one stat fewer per request.
STATS_HISTOGRAMS = {
    "request_duration_milliseconds": ("Milliseconds", "%DURATION%"),
    # Istio's request/response size: headers and body as they crossed the wire
    "request_bytes": ("Bytes", "%DOWNSTREAM_WIRE_BYTES_RECEIVED%"),
    "response_bytes": ("Bytes", "%DOWNSTREAM_WIRE_BYTES_SENT%"),
}
#: The peer header's value is cut at this many bytes before it becomes a tag (``%REQ(h):N%``).
PEER_TAG_MAX = 256
#: The one tag of every stat (``facts``): the facts the labels come from, in one substitution format
#: separated by spaces (no code, flag list, gRPC status, URI or cluster name holds one): response code,
#: response flags, gRPC status, then inbound the peer certificate's URI SANs, outbound the upstream
#: cluster, and last the peer header (its value alone may hold spaces; it is the rest of the string).
#: One tag, not five: Envoy formats each tag of each stat per request, so one format of five commands
#: costs less (bench/telemetry.py, one run: 29.5 µs against 33.6 µs of Envoy CPU per request, bare 25.8).
STATS_TAG = "facts"
STATS_TAG_FORMATS = {
    "destination": f"%RESPONSE_CODE% %RESPONSE_FLAGS% %GRPC_STATUS_NUMBER% %DOWNSTREAM_PEER_URI_SAN% "
    f"%REQ({PEER_HEADER}):{PEER_TAG_MAX}%",
    "source": f"%RESPONSE_CODE% %RESPONSE_FLAGS% %GRPC_STATUS_NUMBER% %UPSTREAM_CLUSTER% "
    f"%RESP({PEER_HEADER}):{PEER_TAG_MAX}%",
}


def _literal(value: str) -> str:
    """``value`` as a substitution format that prints it as is (``%`` doubled)."""
    return value.replace("%", "%%")


def json_log_format(reporter: str, node: dict[str, str]) -> dict[str, str]:
    """The ``json_format`` of Envoy's file access logger (stats transport): one JSON object per request
    with the keys of the server's JSON lines (:mod:`envoykit.telemetry.accesslog`) that Envoy can
    write itself. This side's workload and principal are literals from ``node`` (its metadata and
    ``id``); the other side is its certificate's URI SAN and the peer header as sent (``source_peer`` /
    ``destination_peer``: ``workload=…,app=…``). A value that is a single command operator keeps its
    type (numbers are numbers); Envoy escapes every value.
    """
    me = {k: _literal(node.get(k, "")) for k in ("workload", "namespace", "principal")}
    if reporter == "destination":
        sides = {
            "source_principal": "%DOWNSTREAM_PEER_URI_SAN%",
            "source_peer": f"%REQ({PEER_HEADER})%",
            "destination_workload": me["workload"],
            "destination_namespace": me["namespace"],
            "destination_principal": me["principal"],
        }
    else:
        sides = {
            "source_workload": me["workload"],
            "source_namespace": me["namespace"],
            "source_principal": me["principal"],
            "destination_principal": "%UPSTREAM_PEER_URI_SAN%",
            "destination_peer": f"%RESP({PEER_HEADER})%",
        }
    return {
        "@timestamp": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
        "kind": "http",
        "reporter": reporter,
        "node": _literal(node.get("id", "")),
        "trace_id": "%REQ(x-b3-traceid)%",
        "traceparent": "%REQ(traceparent)%",
        "request_id": "%REQ(x-request-id)%",
        **sides,
        "method": "%REQ(:method)%",
        "authority": "%REQ(:authority)%",
        "path": "%REQ(:path)%",
        "protocol": "%PROTOCOL%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%",
        "response_flags": "%RESPONSE_FLAGS%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "upstream_service_time_ms": "%COMMON_DURATION(US_TX_END:US_RX_BEG:ms)%",
        "request_bytes": "%DOWNSTREAM_WIRE_BYTES_RECEIVED%",
        "response_bytes": "%DOWNSTREAM_WIRE_BYTES_SENT%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "user_agent": "%REQ(user-agent)%",
    }
