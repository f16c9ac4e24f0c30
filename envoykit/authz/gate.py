"""The native gate: Envoy's RBAC decides the requests no Python rule can touch; ext_authz the rest.

A policy directory mixes AuthorizationPolicy YAML (which :mod:`envoykit.authz.rbac` compiles to RBAC,
decision for decision) and Python rules (arbitrary code). A request is *natively decidable* when

* no Python rule *applies* to it — no rule's ``hosts`` / ``paths`` / ``methods`` pre-match matches
  (:meth:`~envoykit.authz.rules.Rule.applies`; a rule without pre-matches applies to everything), and
* it carries no credential ``authn.yaml`` would verify (a token header or cookie, the API-key
  header): a bad one is a 401 only the server gives.

For such a request the engine (:mod:`envoykit.authz.engine`) runs only the YAML policies, so the
compiled RBAC filters decide it exactly as the server would. Every other request goes to ext_authz.
The gate is two RBAC filters placed right before ext_authz (``envoy.extensions.filters.http.rbac.v3.RBAC``):

``envoykit.gate.deny``
    action DENY: the ambiguous paths (always, as the server), and every YAML DENY rule *and not N*,
    where N is "a Python rule applies or a credential is present" (as a ``Permission``). Its
    ``shadow_rules`` (action ALLOW, one policy ``envoykit-python`` = N,
    ``shadow_rules_stat_prefix: envoykit_gate_``) write ``envoykit_gate_shadow_engine_result`` —
    ``allowed`` when N holds, ``denied`` when not — under the dynamic metadata namespace
    ``envoy.filters.http.rbac`` (Envoy prefixes the keys with the shadow stat prefix).
``envoykit.gate.allow`` (only when YAML ALLOW policies apply)
    action ALLOW: the YAML ALLOW rules, plus ``envoykit-python`` = N, which lets the requests
    Python must decide through untouched.

ext_authz then gets ``filter_enabled_metadata`` matching ``envoykit_gate_shadow_engine_result ==
"denied"`` *inverted*: it is skipped only when the gate said "no Python rule applies"; missing
metadata (a route that disables the gate, a filter that did not run) calls ext_authz — fail closed.

N may match more requests than the server's rules apply to (methods compare case-insensitively,
paths allow ``;`` parameters and ``\\`` at every ``/``), never fewer: an over-match costs one call.

**Scope.** YAML policies with ``metadata.namespace`` or a selector apply per destination workload, as
the server reads it from the request (the namespace of its own certificate's SPIFFE ID, the node's
``labels``). The caller names every workload *view* the server may see on this listener (e.g.
namespace known over mTLS, unknown over plaintext); when they compile differently, no gate.

**Every decision accounted for.** The server's decision log and ``envoykit_authz_decisions_total``
cover only the requests it sees. Envoy accounts for the rest: the gate's decision logger
(:mod:`envoykit.core.gatelog`; ``extensions.authz.decision_log``, ``envoy inject
--gate-decision-log``) appends a line in the server's schema with ``"decided_by": "envoy"`` for every
request the gate decided alone (sampled like the server's: denies all, allows by rate), to the
server's own file when local; the telemetry server exposes Envoy's counts of them as
``envoykit_authz_native_decisions_total{node, result}`` (:mod:`envoykit.telemetry.gatestats`).
Dry-run policies stay the server's (they never reach the gate), and a server run with ``--dry-run``
(allow everything) needs the gate off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from envoykit.authz.istio import ROOT_NAMESPACE, Workload
from envoykit.authz.loader import Policy
from envoykit.authz.rbac import AMBIGUOUS_PATH_POLICY, NotCompilable, compile_policies
from envoykit.authz.rules import Rule
from envoykit.core.authzgate import (
    ALLOW_FILTER,
    DENY_FILTER,
    GATE_FILTERS,
    GATE_PREFIX,
    OTHER_NAMESPACE,
    PYTHON_POLICY,
    RBAC_METADATA_NAMESPACE,
    RESULT_KEY,
    Gate,
    GateDocument,
    NoGate,
    ScopedPolicy,
    Where,
    assemble,
    ext_authz_enabled_matcher,
    proto_json,
    with_digest,
)

__all__ = [
    "ALLOW_FILTER",
    "DENY_FILTER",
    "GATE_FILTERS",
    "GATE_PREFIX",
    "OTHER_NAMESPACE",
    "PYTHON_POLICY",
    "RBAC_METADATA_NAMESPACE",
    "RESULT_KEY",
    "Gate",
    "NoGate",
    "compile_gate",
    "ext_authz_enabled_matcher",
    "gate_document",
]


def _regex(rx: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=rx))


_PARAMS = r"(?:;[^/]*)?"


def _glob_path_regex(glob: str) -> str:
    # The rule matches the server's normalised path; Envoy's still has ';' parameters on segments and
    # may keep '\': allow both wherever a '/' or '?' of the glob could stand (see the module doc).
    out = []
    for c in glob:
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(_PARAMS + ".")
        elif c == "/":
            out.append(_PARAMS + r"[/\\]")
        else:
            out.append(re.escape(c))
    return "(?i)" + "".join(out) + _PARAMS


def _glob_host_regex(glob: str) -> str:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return f"(?i){body}(:[0-9]*)?"


def _or(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return items[0] if len(items) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=items))


def _and(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not items:
        return rbac_pb2.Permission(any=True)
    return (
        items[0] if len(items) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=items))
    )


def _header(name: str, matcher: string_pb2.StringMatcher | None = None) -> rbac_pb2.Permission:
    if matcher is None:
        return rbac_pb2.Permission(header=rc.HeaderMatcher(name=name, present_match=True))
    return rbac_pb2.Permission(header=rc.HeaderMatcher(name=name, string_match=matcher))


def rule_applies_permission(rule: Rule) -> rbac_pb2.Permission:
    """A ``Permission`` matching at least every request ``rule`` applies to (its pre-matches)."""
    parts: list[rbac_pb2.Permission] = []
    if rule.methods:
        m = [_header(":method", string_pb2.StringMatcher(exact=x, ignore_case=True)) for x in rule.methods]
        parts.append(_or(m))
    if rule.hosts:
        parts.append(_or([_header(":authority", _regex(_glob_host_regex(h))) for h in rule.hosts]))
    if rule.paths:
        paths = [
            rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=_regex(_glob_path_regex(p))))
            for p in rule.paths
        ]
        parts.append(_or(paths))
    return _and(parts)


def credential_headers(policy: Policy) -> tuple[str, ...]:
    """Request headers that may carry a credential the server verifies (lower-case), from authn.yaml."""
    cfg = policy.authenticator.config
    names: list[str] = []
    for iss in cfg.jwt:
        names += [h.name.lower() for h in iss.from_headers]
        if iss.from_cookies:
            names.append("cookie")
    if cfg.api_keys is not None:
        names.append(cfg.api_keys.header.lower())
    return tuple(dict.fromkeys(names))


def python_rules(policy: Policy) -> list[Rule]:
    """The rules of ``policy`` that are Python code (not compiled from YAML), dry-run ones included
    (they run, and a failing one denies)."""
    from_yaml = {pol.id for pol, _ in policy.yaml_policies}
    return [r for r in policy.rules if r.name not in from_yaml]


def _needs_python(policy: Policy) -> tuple[rbac_pb2.Permission | None, list[str], tuple[str, ...]]:
    rules = python_rules(policy)
    creds = credential_headers(policy)
    parts = [rule_applies_permission(r) for r in rules] + [_header(h) for h in creds]
    return (_or(parts) if parts else None), [r.name for r in rules], creds


def _scoped(policy: Policy) -> list[ScopedPolicy]:
    out = []
    for pol, doc in policy.yaml_policies:
        if pol.dry_run:  # dry-run policies never decide
            continue
        ns = pol.metadata.namespace
        scope = ScopedPolicy(
            id=pol.id,
            action="DENY" if pol.spec.action == "DENY" else "ALLOW",
            namespace=ns if ns and ns != ROOT_NAMESPACE else None,
            match_labels=dict(pol.spec.selector.match_labels) if pol.spec.selector else {},
        )
        try:
            filters = compile_policies([(pol, doc)])
        except NotCompilable as exc:
            where = Where(message=exc.message, file=exc.file, line=exc.line, field=exc.field)
            out.append(scope.model_copy(update={"not_compilable": where}))
            continue
        rules: dict[str, dict[str, Any]] = {}
        for f in filters:
            cfg = http_rbac.RBAC()
            f.typed_config.Unpack(cfg)
            for name, p in cfg.rules.policies.items():
                if name != AMBIGUOUS_PATH_POLICY:
                    rules[name] = proto_json(p)
        out.append(scope.model_copy(update={"rules": rules}))
    return out


def gate_document(policy: Policy) -> GateDocument:
    """The gate of ``policy`` as data (:class:`~envoykit.core.authzgate.GateDocument`, digest filled
    in): what ``envoykit authz serve`` publishes and the control plane assembles per listener.

    A Python rule without pre-match sets ``no_gate`` (file and line named); a YAML policy needing JWT
    facts is marked ``not_compilable`` (listeners it applies to get no gate).
    """
    needs, names, creds = _needs_python(policy)
    no_gate = None
    for rule in python_rules(policy):
        if rule.methods or rule.hosts or rule.paths:
            continue
        file, _, line = rule.source.rpartition(":")
        no_gate = Where(
            message=f"Python rule {rule.name} has no hosts/paths/methods pre-match: it applies to every request",
            file=file or None,
            line=int(line) if line.isdigit() else None,
        )
        break
    ambiguous = compile_policies([])[0]
    amb_cfg = http_rbac.RBAC()
    ambiguous.typed_config.Unpack(amb_cfg)
    return with_digest(
        GateDocument(
            policy_files=tuple(str(f) for f in policy.files),
            no_gate=no_gate,
            ambiguous_path_name=AMBIGUOUS_PATH_POLICY,
            ambiguous_path=proto_json(amb_cfg.rules.policies[AMBIGUOUS_PATH_POLICY]),
            python=proto_json(needs) if needs is not None else None,
            python_rules=tuple(names),
            credentials=creds,
            policies=tuple(_scoped(policy)),
        )
    )


def compile_gate(policy: Policy, views: Sequence[Workload] = (Workload(),)) -> Gate:
    """Compile the gate for ``policy`` on a listener where the server may see any of ``views``: its
    :func:`gate_document`, assembled (:func:`~envoykit.core.authzgate.assemble`) — the same path the
    control plane takes from the published document.

    Args:
        policy: a loaded policy directory (:func:`~envoykit.authz.loader.load_policy`).
        views: the destination workloads the server may read from requests on this listener.

    Raises:
        NoGate: a YAML policy needs Python (JWT facts; file and line named), a Python rule applies to
            every request, or the policies' scope differs between ``views``.
    """
    return assemble(gate_document(policy), views)


def gate_disabled_per_route() -> http_rbac.RBACPerRoute:
    """The per-route config that turns a gate filter off (``RBACPerRoute`` without ``rbac``), for
    routes where ext_authz is disabled: those stay unchecked, as without the gate."""
    return http_rbac.RBACPerRoute()
