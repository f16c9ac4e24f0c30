"""Envoy's response flags (``envoy.data.accesslog.v3.ResponseFlags``) as the short codes of ``%RESPONSE_FLAGS%``.

Istio's ``response_flags`` label carries the same codes, comma-separated, ``-`` when none is set
(Envoy docs: configuration/observability/access_log/usage, "%RESPONSE_FLAGS%").
"""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2

#: ``ResponseFlags`` field → Envoy's short code.
CODES = {
    "failed_local_healthcheck": "LH",
    "no_healthy_upstream": "UH",
    "upstream_request_timeout": "UT",
    "local_reset": "LR",
    "upstream_remote_reset": "UR",
    "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC",
    "upstream_overflow": "UO",
    "no_route_found": "NR",
    "delay_injected": "DI",
    "fault_injected": "FI",
    "rate_limited": "RL",
    "unauthorized_details": "UAEX",
    "rate_limit_service_error": "RLSE",
    "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX",
    "stream_idle_timeout": "SI",
    "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE",
    "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF",
    "no_filter_config_found": "NFCF",
    "duration_timeout": "DT",
    "upstream_protocol_error": "UPE",
    "no_cluster_found": "NC",
    "overload_manager": "OM",
    "dns_resolution_failure": "DF",
    "downstream_remote_reset": "DR",
}
NONE = "-"


def response_flags(flags: accesslog_pb2.ResponseFlags) -> str:
    """``"UF,URX"`` for the flags set in ``flags`` (proto field order), ``"-"`` when none is."""
    # ListFields lists only the fields that are set: usually none, so this is cheap.
    codes = [CODES.get(fd.name, fd.name) for fd, value in flags.ListFields() if value]
    return ",".join(codes) if codes else NONE
