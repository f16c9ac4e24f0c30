"""The native gate's decision log: Envoy writes one JSON line per request its RBAC decided alone.

With the native gate (:mod:`envoykit.core.authzgate`) Envoy decides most requests itself and the authz
server never sees them, so its decision log (``authz serve --decision-log``) would cover only the rest.
:func:`native_decision_logs` are the access loggers that close the gap: ``envoy.access_loggers.file``
on the connection manager that runs the gate, writing the server's line schema with
``"decided_by": "envoy"`` (the server writes ``"server"``) for

* every request a gate filter denied (``<prefix>enforced_engine_result == "denied"``, which the HTTP
  RBAC filter writes under ``envoy.filters.http.rbac`` with its ``rules_stat_prefix``), sampled by
  ``sample_deny`` (all by default), and
* every request the gate let through without ext_authz (its shadow result ``denied``: no Python rule
  applies; neither gate filter denied), sampled by ``sample_allow``.

Sampling is an access-log filter (``runtime_filter`` with ``percent_sampled`` and independent
randomness, tested before the metadata), so a request that draws no line costs Envoy only the filters'
look-ups; the line itself is formatted only when it is written. Requests the gate sent to the server
are not logged here (the server logs them), nor requests on routes where the gate and ext_authz are
disabled (no decision was made).

What each field holds, from Envoy's own facts only (plain command operators, no CEL):

``time`` (request start, UTC), ``node`` (the Envoy's node id, a constant of its config),
``request_id`` (``x-request-id``), ``principal`` (``%DOWNSTREAM_PEER_URI_SAN%``: the peer
certificate's URI SANs, comma-separated — one for a mesh workload; null without mTLS),
``request_principal`` (always null: a request with a credential always goes to the server),
``method``, ``host`` (``:authority``), ``path`` (``%PATH(WQ)%``: Envoy's normalised path without the
query), ``result`` (``allow``/``deny``), ``status`` (403 on a deny, else null), ``enforced`` (true),
``reason`` (a deny's ``%RESPONSE_CODE_DETAILS%``, ``rbac_access_denied_matched_policy[<policy>]``;
null on an allow), and ``rule``: the RBAC policy Envoy reports as effective
(``<prefix>enforced_effective_policy_id``) — on a deny by the DENY filter the DENY policy that matched
(``<policy id>[<rule index>]``, or ``envoykit-ambiguous-path``), on an allow the ALLOW policy that
matched; ``<no-allow-match>`` when the ALLOW filter matched none and ``<default>`` when the gate has
no ALLOW filter (the server's names for those two). ``duration_us`` and ``shadow`` are absent (Envoy
does not time its RBAC filters; dry-run policies never reach the gate).

Sources: Envoy docs, HTTP RBAC filter (dynamic metadata, ``rules_stat_prefix``,
``RESPONSE_CODE_DETAILS`` of a deny); ``config.accesslog.v3.AccessLogFilter`` (``metadata_filter``,
whose matcher's ``invert`` it does not apply; ``runtime_filter``); access-log command operators.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from envoykit.core.authzgate import ALLOW_FILTER, GATE_PREFIX, RBAC_METADATA_NAMESPACE, RESULT_KEY, Gate

#: The access logger's name (``AccessLog.name``: Envoy's file access logger).
LOGGER = "envoy.access_loggers.file"
#: ``runtime_filter`` keys: a runtime override of the sampling without a config push (Envoy runtime).
RUNTIME_ALLOW = "envoykit.gate.decision_log.sample_allow"
RUNTIME_DENY = "envoykit.gate.decision_log.sample_deny"

_DENY_RESULT = GATE_PREFIX + "deny_enforced_engine_result"
_ALLOW_RESULT = GATE_PREFIX + "allow_enforced_engine_result"
_DENY_POLICY = GATE_PREFIX + "deny_enforced_effective_policy_id"
_ALLOW_POLICY = GATE_PREFIX + "allow_enforced_effective_policy_id"


def _meta(key: str) -> str:
    return f"%DYNAMIC_METADATA({RBAC_METADATA_NAMESPACE}:{key})%"


#: The fields every line shares (``json_format``; see the module doc). Only Envoy's plain command
#: operators: a CEL expression per field cost ~90k instructions a line (bench/authz_instructions.py).
COMMON: dict[str, object] = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "decided_by": "envoy",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "principal": "%DOWNSTREAM_PEER_URI_SAN%",
    "method": "%REQ(:METHOD)%",
    "host": "%REQ(:AUTHORITY)%",
    "path": "%PATH(WQ)%",
    "request_principal": None,  # a request with a credential always goes to the server
    "enforced": True,
}
_DENY_LINE = {"result": "deny", "status": "%RESPONSE_CODE%", "reason": "%RESPONSE_CODE_DETAILS%"}
_ALLOW_LINE = {"result": "allow", "status": None, "reason": None}


def _is(key: str, value: str) -> accesslog_pb2.AccessLogFilter:
    # the access-log metadata filter ignores MetadataMatcher.invert: say what is wanted, never "not"
    return accesslog_pb2.AccessLogFilter(
        metadata_filter=accesslog_pb2.MetadataFilter(
            matcher=metadata_pb2.MetadataMatcher(
                filter=RBAC_METADATA_NAMESPACE,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)],
                value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=value)),
            ),
            match_if_key_not_found=wrappers_pb2.BoolValue(value=False),
        )
    )


def _sampled(rate: float, key: str) -> list[accesslog_pb2.AccessLogFilter]:
    if rate >= 1.0:
        return []
    return [
        accesslog_pb2.AccessLogFilter(
            runtime_filter=accesslog_pb2.RuntimeFilter(
                runtime_key=key,
                percent_sampled=percent_pb2.FractionalPercent(
                    numerator=round(rate * 1_000_000), denominator=percent_pb2.FractionalPercent.MILLION
                ),
                use_independent_randomness=True,
            )
        )
    ]


def _and(items: list[accesslog_pb2.AccessLogFilter]) -> accesslog_pb2.AccessLogFilter:
    if len(items) == 1:
        return items[0]
    return accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=items))


def _logger(
    path: str, line: dict[str, object], when: list[accesslog_pb2.AccessLogFilter]
) -> accesslog_pb2.AccessLog:
    fmt = struct_pb2.Struct()
    fmt.update(line)
    cfg = file_pb2.FileAccessLog(path=path, log_format=sfs.SubstitutionFormatString(json_format=fmt))
    out = accesslog_pb2.AccessLog(name=LOGGER, filter=_and(when))
    out.typed_config.Pack(cfg)
    return out


def native_decision_logs(
    gate: Gate, path: str, sample_allow: float = 1.0, sample_deny: float = 1.0, node: str | None = None
) -> list[accesslog_pb2.AccessLog]:
    """The file access loggers writing ``gate``'s native decisions to ``path`` (appended; see the
    module doc): one for the DENY filter's denies, one for the ALLOW filter's (when the gate has
    one), one for the allows; none for a rate of 0.

    Each has its own filter so that each line is plain: the rule is a metadata value or a constant,
    never a computed choice. A sampled logger tests its draw first (cheapest), then the metadata.

    Args:
        gate: the gate on the connection manager that gets the loggers.
        path: the file Envoy appends to (it may be the authz server's own ``--decision-log`` file:
            both append whole lines).
        sample_allow / sample_deny: fraction (0..1) of native allows / denies written, as the
            server's ``--decision-log-sample-allow`` (denies: all by default).
        node: the Envoy's node id, written as ``node`` (None: no such field).

    Raises:
        ValueError: a rate outside 0..1.
    """
    for name, rate in (("sample_allow", sample_allow), ("sample_deny", sample_deny)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, not {rate}")
    has_allow = ALLOW_FILTER in gate.filter_names
    common = {**COMMON, **({"node": node} if node is not None else {})}
    out = []
    if sample_deny > 0:
        deny_sample = _sampled(sample_deny, RUNTIME_DENY)
        line = {**common, **_DENY_LINE, "rule": _meta(_DENY_POLICY)}
        out.append(_logger(path, line, [*deny_sample, _is(_DENY_RESULT, "denied")]))
        if has_allow:  # the ALLOW filter matched no policy: the server's <no-allow-match>
            line = {**common, **_DENY_LINE, "rule": "<no-allow-match>"}
            out.append(_logger(path, line, [*deny_sample, _is(_ALLOW_RESULT, "denied")]))
    if sample_allow > 0:
        # ext_authz skipped (the gate decided) and neither gate filter denied
        when = [
            *_sampled(sample_allow, RUNTIME_ALLOW),
            _is(RESULT_KEY, "denied"),
            _is(_DENY_RESULT, "allowed"),
        ]
        if has_allow:
            when.append(_is(_ALLOW_RESULT, "allowed"))
        rule = _meta(_ALLOW_POLICY) if has_allow else "<default>"  # no ALLOW policy applies
        line = {**common, **_ALLOW_LINE, "rule": rule}
        out.append(_logger(path, line, when))
    return out
