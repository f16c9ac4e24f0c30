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
