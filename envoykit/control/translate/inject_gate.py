"""The authz native gate for ``envoykit envoy inject --authz ... --gate FILE|URL``.

The gate is assembled (:mod:`envoykit.core.authzgate`) from the document the authz server publishes
for the policy it serves (``--gate-file``, ``/gate``) or ``envoykit authz compile --gate --document``
writes — never from the policy files — and placed right before ext_authz in every HCM; ext_authz gets its ``filter_enabled_metadata``. What the
server may read of the destination here is unknown (the listener's certificate is the user's), so the
views are "no namespace" and "some namespace": policies scoped by namespace make the gate step aside.
Labels are the config's ``node.metadata.labels`` (what ext_authz sends as the destination's labels).

The HCM must normalise paths as the server does (``normalize_path``, ``merge_slashes``,
``path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD``), else the gate is refused: RBAC would
match another path than the server. Where a route or virtual host of an inline ``route_config`` disables ext_authz
(``ExtAuthzPerRoute.disabled``), the gate filters are disabled too (``RBACPerRoute`` without ``rbac``);
routes over RDS cannot be seen, so such an HCM is refused (``--no-gate`` keeps plain ext_authz).

``--gate-decision-log FILE`` adds the gate's decision log to every HCM that gets the gate: Envoy
appends a JSON line for each request its RBAC decided alone (:mod:`envoykit.core.gatelog`), in the
server's ``--decision-log`` schema with ``"decided_by": "envoy"``; the same file as the server's when
both run on one host.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from envoykit.core.authzgate import GATE_FILTERS, OTHER_NAMESPACE, Gate, NoGate, assemble, read_document

_EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_RBAC_PER_ROUTE = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}


def _d(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
    return out


class _View:
    def __init__(self, namespace: str | None, labels: dict[str, str]) -> None:
        self.namespace = namespace
        self.labels = labels


def config_gate(config: dict[str, Any], source: str) -> tuple[Gate | None, list[str]]:
    """Assemble the gate for ``config`` from the gate document at ``source`` (file or http URL);
    None (with a note saying why) when the policy cannot be split.

    Raises:
        GateDocError: the document cannot be read or is not a valid one.
    """
    md = (config.get("node") or {}).get("metadata") or {}
    raw = md.get("labels") if isinstance(md, dict) else None
    labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    views = [_View(None, labels), _View(OTHER_NAMESPACE, labels)]
    doc = read_document(source)
    try:
        gate = assemble(doc, views)
    except NoGate as exc:
        return None, [f"native gate off, every request goes to ext_authz: {exc}"]
    sent = ", ".join([*gate.python_rules, *(f"header {h}" for h in gate.credentials)]) or "nothing"
    return gate, [
        f"native gate on (document {doc.digest[:12]}): ext_authz is called only for requests matching {sent}"
    ]


def _is_gate_log(entry: dict[str, Any]) -> bool:
    fmt = ((entry.get("typed_config") or {}).get("log_format") or {}).get("json_format") or {}
    return bool(fmt.get("decided_by") == "envoy")


def place_gate(
    hcm: dict[str, Any], gate: Gate, replace: bool, decision_logs: list[dict[str, Any]] | None = None
) -> None:
    """Insert the gate's filters right before ext_authz in ``hcm`` (a mapping) and turn them off where
    the inline routes disable ext_authz; add ``decision_logs`` (the gate's access loggers,
    :func:`envoykit.core.gatelog.native_decision_logs` as mappings) to its ``access_log``.

    Raises:
        ValueError: gate filters already there (without ``replace``), or routes over RDS.
    """
    prefix = hcm.get("stat_prefix", "?")
    if "route_config" not in hcm:
        raise ValueError(
            f"HCM {prefix}: routes come over RDS, so the native gate cannot follow their per-route "
            "ext_authz settings: give --no-gate"
        )
    wanted: dict[str, object] = {"normalize_path": True, "merge_slashes": True}
    wanted["path_with_escaped_slashes_action"] = "UNESCAPE_AND_FORWARD"
    missing = [f"{k}: {v}".replace("True", "true") for k, v in wanted.items() if hcm.get(k) != v]
    if missing:
        # RBAC matches Envoy's path, the server its own normalised one: they agree only on this one
        raise ValueError(
            f"HCM {prefix}: the native gate needs the path the authz server matches; set "
            f"{', '.join(missing)} (docs/authz.md), or give --no-gate"
        )
    filters = hcm["http_filters"]
    # both gate filters, though this gate may have one: renew whole
    present = [i for i, f in enumerate(filters) if f.get("name") in GATE_FILTERS]
    if present and not replace:
        raise ValueError(f"HCM {prefix} already has the native gate: give --replace to renew it")
    for i in reversed(present):
        del filters[i]
    at = next(
        i for i, f in enumerate(filters) if (f.get("typed_config") or {}).get("@type") == _EXT_AUTHZ_TYPE
    )
    ext_authz_name = filters[at].get("name")
    for offset, f in enumerate(gate.filters):
        filters.insert(at + offset, _d(f))
    logs = hcm.get("access_log") or []
    if any(_is_gate_log(e) for e in logs) and not replace:
        raise ValueError(f"HCM {prefix} already has the gate's decision log: give --replace to renew it")
    logs = [e for e in logs if not _is_gate_log(e)]
    logs += decision_logs or []
    if logs:
        hcm["access_log"] = logs
    for vh in hcm["route_config"].get("virtual_hosts") or []:
        for holder in [vh, *(vh.get("routes") or [])]:
            per = holder.get("typed_per_filter_config") or {}
            conf = per.get(ext_authz_name) or {}
            if conf.get("disabled") is True:
                for name in gate.filter_names:
                    per[name] = dict(_RBAC_PER_ROUTE)
