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

**What stays with the server.** Decision log, ``envoykit_authz_*`` metrics and dry-run entries cover
only the requests it sees; a server run with ``--dry-run`` (allow everything) needs the gate off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from envoykit.authz.istio import Workload
from envoykit.authz.loader import Policy
from envoykit.authz.rbac import AMBIGUOUS_PATH_POLICY, NotCompilable, compile_policies
from envoykit.authz.rules import Rule
from envoykit.core.errors import ConfigError

#: Dynamic metadata namespace the HTTP RBAC filter writes (its shadow engine result).
RBAC_METADATA_NAMESPACE = "envoy.filters.http.rbac"
#: ``shadow_rules_stat_prefix`` of the gate; also the prefix of its metadata keys and shadow stats.
GATE_PREFIX = "envoykit_gate_"
#: The metadata key ext_authz reads: ``allowed`` = Python must decide, ``denied`` = decided here.
RESULT_KEY = GATE_PREFIX + "shadow_engine_result"
#: The RBAC policy standing for "a Python rule applies or a credential is present".
PYTHON_POLICY = "envoykit-python"
DENY_FILTER = "envoykit.gate.deny"
ALLOW_FILTER = "envoykit.gate.allow"
GATE_FILTERS = (DENY_FILTER, ALLOW_FILTER)
#: A namespace no policy names: the view "the server knows some other namespace".
OTHER_NAMESPACE = "\x00other"


class NoGate(ConfigError):
    """The policy cannot be split safely (the message says why): every request goes to ext_authz."""


@dataclass(frozen=True)
class Gate:
    """A compiled gate.

    Attributes:
        filters: the RBAC ``HttpFilter`` messages to place, in order, right before ext_authz.
        ext_authz_enabled: the ext_authz filter's ``filter_enabled_metadata``.
        python_rules: names of the rules whose requests go to ext_authz.
        credentials: header names whose presence sends a request to ext_authz (authn.yaml).
    """

    filters: tuple[hcm.HttpFilter, ...]
    ext_authz_enabled: metadata_pb2.MetadataMatcher
    python_rules: tuple[str, ...]
    credentials: tuple[str, ...]

    @property
    def filter_names(self) -> tuple[str, ...]:
        """Names of the gate's filters (to disable them where ext_authz is disabled per route)."""
        return tuple(f.name for f in self.filters)


def ext_authz_enabled_matcher() -> metadata_pb2.MetadataMatcher:
    """ext_authz runs unless the gate's shadow result is ``denied`` (``MetadataMatcher.invert``)."""
    return metadata_pb2.MetadataMatcher(
        filter=RBAC_METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=RESULT_KEY)],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact="denied")),
        invert=True,
    )


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


def _unpack(f: hcm.HttpFilter) -> http_rbac.RBAC:
    cfg = http_rbac.RBAC()
    f.typed_config.Unpack(cfg)
    return cfg


def _compile_view(policy: Policy, view: Workload) -> dict[str, http_rbac.RBAC]:
    enforced = [p for p in policy.yaml_policies if not p[0].dry_run]  # dry-run ones never decide
    out: dict[str, http_rbac.RBAC] = {}
    for f in compile_policies(enforced, view):
        cfg = _unpack(f)
        out["DENY" if cfg.rules.action == rbac_pb2.RBAC.DENY else "ALLOW"] = cfg
    return out


def compile_gate(policy: Policy, views: Sequence[Workload] = (Workload(),)) -> Gate:
    """Compile the gate for ``policy`` on a listener where the server may see any of ``views``.

    Args:
        policy: a loaded policy directory (:func:`~envoykit.authz.loader.load_policy`).
        views: the destination workloads the server may read from requests on this listener.

    Raises:
        NoGate: a YAML policy needs Python (JWT facts; file and line named), a Python rule applies to
            every request, or the policies' scope differs between ``views``.
    """
    needs, names, creds = _needs_python(policy)
    for rule in python_rules(policy):
        if rule.methods or rule.hosts or rule.paths:
            continue
        file, _, line = rule.source.rpartition(":")
        raise NoGate(
            f"Python rule {rule.name} has no hosts/paths/methods pre-match: it applies to every request",
            file=file or None,
            line=int(line) if line.isdigit() else None,
        )
    try:
        compiled = [_compile_view(policy, v) for v in views]
    except NotCompilable as exc:
        raise NoGate(
            f"{exc.message}; the gate needs every YAML policy compilable",
            file=exc.file,
            line=exc.line,
            field=exc.field,
        ) from None
    first = compiled[0]
    for other in compiled[1:]:
        if {k: v.SerializeToString(deterministic=True) for k, v in other.items()} != {
            k: v.SerializeToString(deterministic=True) for k, v in first.items()
        }:
            raise NoGate(
                "a policy's namespace or selector decides differently for what the server may see here"
            )
    deny = first.get("DENY") or http_rbac.RBAC()
    deny_rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
    for name, pol in deny.rules.policies.items():
        gated = rbac_pb2.Policy()
        gated.CopyFrom(pol)
        if needs is not None and name != AMBIGUOUS_PATH_POLICY:
            perm = _or(list(pol.permissions))
            del gated.permissions[:]
            gated.permissions.append(_and([perm, rbac_pb2.Permission(not_rule=needs)]))
        deny_rules.policies[name].CopyFrom(gated)
    shadow = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    if needs is not None:
        shadow.policies[PYTHON_POLICY].CopyFrom(
            rbac_pb2.Policy(permissions=[needs], principals=[rbac_pb2.Principal(any=True)])
        )
    filters = [hcm.HttpFilter(name=DENY_FILTER)]
    filters[0].typed_config.Pack(
        http_rbac.RBAC(
            rules=deny_rules,
            rules_stat_prefix=GATE_PREFIX + "deny_",
            shadow_rules=shadow,
            shadow_rules_stat_prefix=GATE_PREFIX,
        )
    )
    allow = first.get("ALLOW")
    if allow is not None and allow.HasField("rules"):
        allow_rules = rbac_pb2.RBAC()
        allow_rules.CopyFrom(allow.rules)
        if needs is not None:
            allow_rules.policies[PYTHON_POLICY].CopyFrom(
                rbac_pb2.Policy(permissions=[needs], principals=[rbac_pb2.Principal(any=True)])
            )
        f = hcm.HttpFilter(name=ALLOW_FILTER)
        f.typed_config.Pack(http_rbac.RBAC(rules=allow_rules, rules_stat_prefix=GATE_PREFIX + "allow_"))
        filters.append(f)
    return Gate(tuple(filters), ext_authz_enabled_matcher(), tuple(names), creds)


def gate_disabled_per_route() -> http_rbac.RBACPerRoute:
    """The per-route config that turns a gate filter off (``RBACPerRoute`` without ``rbac``), for
    routes where ext_authz is disabled: those stay unchecked, as without the gate."""
    return http_rbac.RBACPerRoute()
