"""The native gate's decision log: Envoy writes one JSON line per request its RBAC decided alone.

With the native gate (:mod:`envoykit.core.authzgate`) Envoy decides most requests itself and the authz
server never sees them, so its decision log (``authz serve --decision-log``) would cover only the rest.
:func:`native_decision_log` is the access logger that closes the gap: an ``envoy.access_loggers.file``
on the same connection manager as the gate, writing the server's line schema with
``"decided_by": "envoy"`` (the server writes ``"server"``) for

* every request a gate filter denied (``<prefix>enforced_engine_result == "denied"``, which the HTTP
  RBAC filter writes under ``envoy.filters.http.rbac`` with its ``rules_stat_prefix``), sampled by
  ``sample_deny`` (all by default), and
* every request the gate let through without ext_authz (its shadow result ``denied``: no Python rule
  applies), sampled by ``sample_allow``.

Sampling is an access-log filter (``runtime_filter`` with ``percent_sampled`` and independent
randomness), so a request that draws no line costs Envoy only the filter's metadata look-ups; the line
itself is formatted only when it is written. Requests the gate sent to the server are not logged here
(the server logs them), nor requests on routes where the gate and ext_authz are disabled.

What each field holds, from Envoy's own facts only:

``time`` (request start, UTC), ``request_id`` (``x-request-id``), ``principal`` (the peer
certificate's first URI SAN, CEL ``connection.uri_san_peer_certificate``; null without mTLS),
``request_principal`` (always null: a request with a credential always goes to the server),
``method``, ``host`` (``:authority``), ``path`` (``%PATH(WQ)%``: Envoy's normalised path without the
query), ``result`` (``allow``/``deny``), ``status`` (403 on a deny, else null), ``enforced`` (true),
``reason`` (a deny's ``%RESPONSE_CODE_DETAILS%``, ``rbac_access_denied_matched_policy[<policy>]``),
``node`` (the Envoy's node id), and ``rule``: the RBAC policy Envoy reports as effective
(``<prefix>enforced_effective_policy_id``) — on a deny the DENY policy that matched
(``<policy id>[<rule index>]``, or ``envoykit-ambiguous-path``), on an allow the ALLOW policy that
matched; ``<no-allow-match>`` when the ALLOW filter matched none and ``<default>`` when no ALLOW policy
applies (the server's names for those two). ``duration_us`` and ``shadow`` are absent (Envoy does not
time its RBAC filters; dry-run policies never reach the gate).

Sources: Envoy docs, HTTP RBAC filter (dynamic metadata, ``rules_stat_prefix``,
``RESPONSE_CODE_DETAILS`` of a deny); ``config.accesslog.v3.AccessLogFilter`` (``metadata_filter``,
``runtime_filter``); ``extensions.formatter.cel.v3`` (``%TYPED_CEL%``).
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from envoykit.core.authzgate import GATE_PREFIX, RBAC_METADATA_NAMESPACE, RESULT_KEY

#: The access logger's name (``AccessLog.name``: Envoy's file access logger).
LOGGER = "envoy.access_loggers.file"
#: ``runtime_filter`` keys: a runtime override of the sampling without a config push (Envoy runtime).
RUNTIME_ALLOW = "envoykit.gate.decision_log.sample_allow"
RUNTIME_DENY = "envoykit.gate.decision_log.sample_deny"

_DENY_RESULT = GATE_PREFIX + "deny_enforced_engine_result"
_ALLOW_RESULT = GATE_PREFIX + "allow_enforced_engine_result"
_DENY_POLICY = GATE_PREFIX + "deny_enforced_effective_policy_id"
_ALLOW_POLICY = GATE_PREFIX + "allow_enforced_effective_policy_id"
_M = f"metadata.filter_metadata['{RBAC_METADATA_NAMESPACE}']"
_DENIED = f"({_M}['{_DENY_RESULT}'] == 'denied' || ('{_ALLOW_RESULT}' in {_M} && {_M}['{_ALLOW_RESULT}'] == 'denied'))"
_RULE = (
    f"'{_DENY_POLICY}' in {_M} ? {_M}['{_DENY_POLICY}'] : "
    f"('{_ALLOW_POLICY}' in {_M} ? {_M}['{_ALLOW_POLICY}'] : "
    f"('{_ALLOW_RESULT}' in {_M} ? '<no-allow-match>' : '<default>'))"
)

#: The line (``json_format``): the server's schema, from Envoy's facts (see the module doc).
LINE: dict[str, object] = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "decided_by": "envoy",
    "node": "%TYPED_CEL(xds.node.id)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "principal": "%TYPED_CEL(connection.uri_san_peer_certificate)%",
    "request_principal": "%TYPED_CEL(null)%",
    "method": "%REQ(:METHOD)%",
    "host": "%REQ(:AUTHORITY)%",
    "path": "%PATH(WQ)%",
    "rule": f"%TYPED_CEL({_RULE})%",
    "result": f"%TYPED_CEL({_DENIED} ? 'deny' : 'allow')%",
    "status": f"%TYPED_CEL({_DENIED} ? response.code : null)%",
    "enforced": True,
    "reason": f"%TYPED_CEL({_DENIED} ? response.code_details : null)%",
}


def _is(key: str, value: str, if_missing: bool = False) -> accesslog_pb2.AccessLogFilter:
    # the access-log metadata filter ignores MetadataMatcher.invert: say what is wanted, never "not"
    return accesslog_pb2.AccessLogFilter(
        metadata_filter=accesslog_pb2.MetadataFilter(
            matcher=metadata_pb2.MetadataMatcher(
                filter=RBAC_METADATA_NAMESPACE,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)],
                value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=value)),
            ),
            match_if_key_not_found=wrappers_pb2.BoolValue(value=if_missing),
        )
    )


def _sampled(rate: float, key: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        runtime_filter=accesslog_pb2.RuntimeFilter(
            runtime_key=key,
            percent_sampled=percent_pb2.FractionalPercent(
                numerator=round(rate * 1_000_000), denominator=percent_pb2.FractionalPercent.MILLION
            ),
            use_independent_randomness=True,
        )
    )


def _and(*items: accesslog_pb2.AccessLogFilter) -> accesslog_pb2.AccessLogFilter:
    if len(items) == 1:
        return items[0]
    return accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=items))


def _or(*items: accesslog_pb2.AccessLogFilter) -> accesslog_pb2.AccessLogFilter:
    if len(items) == 1:
        return items[0]
    return accesslog_pb2.AccessLogFilter(or_filter=accesslog_pb2.OrFilter(filters=items))


def log_filter(sample_allow: float = 1.0, sample_deny: float = 1.0) -> accesslog_pb2.AccessLogFilter | None:
    """The access-log filter selecting the gate's native decisions, sampled; None: nothing is logged.

    Raises:
        ValueError: a rate outside 0..1.
    """
    for name, rate in (("sample_allow", sample_allow), ("sample_deny", sample_deny)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, not {rate}")
    denied = _or(_is(_DENY_RESULT, "denied"), _is(_ALLOW_RESULT, "denied"))
    allowed = [_is(RESULT_KEY, "denied")]  # ext_authz skipped: the gate decided
    if sample_deny < 1:  # a deny not drawn must not fall through to the allow branch
        # (the allow filter is absent when no ALLOW policy applies)
        allowed += [_is(_DENY_RESULT, "allowed"), _is(_ALLOW_RESULT, "allowed", if_missing=True)]
    if sample_allow < 1:
        allowed.append(_sampled(sample_allow, RUNTIME_ALLOW))
    branches = []
    if sample_deny > 0:
        branches.append(denied if sample_deny >= 1 else _and(denied, _sampled(sample_deny, RUNTIME_DENY)))
    if sample_allow > 0:
        branches.append(_and(*allowed))
    return _or(*branches) if branches else None


def native_decision_log(
    path: str, sample_allow: float = 1.0, sample_deny: float = 1.0
) -> accesslog_pb2.AccessLog | None:
    """The file access logger writing the gate's native decisions to ``path`` (appended; see the
    module doc), or None when both rates are 0.

    Args:
        path: the file Envoy appends to (it may be the authz server's own ``--decision-log`` file:
            both append whole lines).
        sample_allow / sample_deny: fraction (0..1) of native allows / denies written, as the
            server's ``--decision-log-sample-allow`` (denies: all by default).

    Raises:
        ValueError: a rate outside 0..1.
    """
    flt = log_filter(sample_allow, sample_deny)
    if flt is None:
        return None
    fmt = struct_pb2.Struct()
    fmt.update(LINE)
    cfg = file_pb2.FileAccessLog(path=path, log_format=sfs.SubstitutionFormatString(json_format=fmt))
    out = accesslog_pb2.AccessLog(name=LOGGER, filter=flt)
    out.typed_config.Pack(cfg)
    return out
