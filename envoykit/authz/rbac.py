"""Compile declarative AuthorizationPolicies to Envoy's native RBAC filter.

For policies that need no Python, Envoy can enforce the same decisions itself, with no call out:
``envoykit authz compile POLICY_DIR`` prints the ``http_filters`` entries to put before the router.
The mapping follows Istio's own translation (``envoy.config.rbac.v3``): DENY policies go into a DENY
RBAC filter placed first, ALLOW policies into an ALLOW filter after it; each Istio rule becomes one RBAC
``Policy`` whose permissions (``to`` operations and request-side ``when`` conditions) and principals
(``from`` sources and peer-side ``when`` conditions) must both match. ``dryRun`` policies become
``shadow_rules``. What only the Python path can decide — JWT claims and request principals (verified by
envoykit, not by Envoy), Python rule modules — is refused with the field that needs it.

Equivalence with the Python path holds when the HTTP connection manager normalises paths as
:mod:`envoykit.authz.paths` describes (``normalize_path``, ``merge_slashes``,
``path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD``, as the control plane and ``envoy/*.yaml`` set) and for
SPIFFE principals. Path patterns compile to regexes that allow the ``;`` parameters Envoy leaves on
segments, and the DENY filter first refuses the ambiguous paths the Python path refuses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from envoykit.authz.istio import (
    HEADER_KEY,
    AuthorizationPolicy,
    Condition,
    Operation,
    RuleSpec,
    Source,
    Workload,
)
from envoykit.authz.loader import Policy
from envoykit.authz.paths import AMBIGUOUS_PATH_PARTS, envoy_path_regex
from envoykit.core.errors import ConfigError
from envoykit.core.yamlfile import YamlDocument


class NotCompilable(ConfigError):
    """A policy uses something only the Python path can decide (named in the message and field)."""


def _regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def string_matcher(pattern: str, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's value forms as a StringMatcher: ``*`` (non-empty), ``prefix*``, ``*suffix``, exact."""
    if pattern == "*":
        return _regex(".+")
    if pattern.endswith("*"):
        return string_pb2.StringMatcher(prefix=pattern[:-1], ignore_case=ignore_case)
    if pattern.startswith("*"):
        return string_pb2.StringMatcher(suffix=pattern[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=pattern, ignore_case=ignore_case)


def _or_perm(items: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return items[0] if len(items) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=items))


def _and_perm(items: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not items:
        return rbac_pb2.Permission(any=True)
    return (
        items[0] if len(items) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=items))
    )


def _or_id(items: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return items[0] if len(items) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=items))


def _and_id(items: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not items:
        return rbac_pb2.Principal(any=True)
    return items[0] if len(items) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=items))


def _header_perm(name: str, pattern: str, *, ignore_case: bool = False) -> rbac_pb2.Permission:
    m = rc.HeaderMatcher(name=name, string_match=string_matcher(pattern, ignore_case=ignore_case))
    return rbac_pb2.Permission(header=m)


def _host_perm(pattern: str) -> rbac_pb2.Permission:
    # The Python path matches the authority with and without its port, case-insensitively.
    if pattern == "*":
        rx = ".+"
    elif pattern.endswith("*"):
        rx = re.escape(pattern[:-1]) + ".*"
    elif pattern.startswith("*"):
        rx = ".*" + re.escape(pattern[1:]) + "(:[0-9]+)?"
    else:
        rx = re.escape(pattern) + "(:[0-9]+)?"
    m = rc.HeaderMatcher(name=":authority", string_match=_regex("(?i)" + rx))
    return rbac_pb2.Permission(header=m)


def _path_perm(pattern: str) -> rbac_pb2.Permission:
    # Envoy's RBAC sees the path after the HCM's normalisation, which keeps ';' parameters on
    # ordinary segments; the regex matches exactly the paths whose envoykit-normalised form matches.
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=_regex(envoy_path_regex(pattern))))


#: First rule of the DENY filter: the paths the Python path refuses as ambiguous (envoykit.authz.paths).
AMBIGUOUS_PATH_POLICY = "envoykit-ambiguous-path"


def _ambiguous_path_policy() -> rbac_pb2.Policy:
    # substring matchers: cheaper on every request than one regex over the whole path
    parts = [
        rbac_pb2.Permission(
            url_path=path_pb2.PathMatcher(path=string_pb2.StringMatcher(contains=part, ignore_case=True))
        )
        for part in AMBIGUOUS_PATH_PARTS
    ]
    return rbac_pb2.Policy(permissions=[_or_perm(parts)], principals=[rbac_pb2.Principal(any=True)])


def _principal_id(pattern: str) -> rbac_pb2.Principal:
    # The Python path compares a SPIFFE principal with and without its scheme.
    forms = (
        [pattern] if pattern.startswith("spiffe://") or pattern == "*" else [pattern, "spiffe://" + pattern]
    )
    return _or_id(
        [
            rbac_pb2.Principal(
                authenticated=rbac_pb2.Principal.Authenticated(principal_name=string_matcher(f))
            )
            for f in forms
        ]
    )


def _namespace_id(pattern: str) -> rbac_pb2.Principal:
    if pattern == "*":
        ns = "[^/]+"
    elif pattern.endswith("*"):
        ns = re.escape(pattern[:-1]) + "[^/]*"
    elif pattern.startswith("*"):
        ns = "[^/]*" + re.escape(pattern[1:])
    else:
        ns = re.escape(pattern)
    name = _regex(f"spiffe://[a-z0-9._-]+/ns/{ns}/sa/[^/]+")
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=name))


def _cidr(block: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(block, strict=False)
    cidr = address_pb2.CidrRange(address_prefix=str(net.network_address))
    cidr.prefix_len.value = net.prefixlen
    return cidr


def _ip_id(block: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(direct_remote_ip=_cidr(block))


def _remote_ip_id(block: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(remote_ip=_cidr(block))


def _service_account_id(sa: str) -> rbac_pb2.Principal:
    ns, name = sa.split("/", 1)
    rx = _regex(f"spiffe://[a-z0-9._-]+/ns/{re.escape(ns)}/sa/{re.escape(name)}")
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=rx))


def _port_perm(port: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_port=int(port))


def _destination_ip_perm(block: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_ip=_cidr(block))


def _values(
    pos: Sequence[str], neg: Sequence[str], make: Callable[[str], rbac_pb2.Permission]
) -> list[rbac_pb2.Permission]:
    out: list[rbac_pb2.Permission] = []
    if pos:
        out.append(_or_perm([make(p) for p in pos]))
    if neg:
        out.append(rbac_pb2.Permission(not_rule=_or_perm([make(p) for p in neg])))
    return out


def _ids(
    pos: Sequence[str], neg: Sequence[str], make: Callable[[str], rbac_pb2.Principal]
) -> list[rbac_pb2.Principal]:
    out: list[rbac_pb2.Principal] = []
    if pos:
        out.append(_or_id([make(p) for p in pos]))
    if neg:
        out.append(rbac_pb2.Principal(not_id=_or_id([make(p) for p in neg])))
    return out


def _operation(op: Operation) -> rbac_pb2.Permission:
    parts = [
        *_values(op.hosts, op.not_hosts, _host_perm),
        *_values(op.ports, op.not_ports, _port_perm),
        *_values(op.methods, op.not_methods, lambda m: _header_perm(":method", m)),
        *_values(op.paths, op.not_paths, _path_perm),
    ]
    return _and_perm(parts)


def _source(src: Source, where: str) -> rbac_pb2.Principal:
    if src.request_principals or src.not_request_principals:
        raise NotCompilable(
            "requestPrincipals need a verified JWT: only the Python path decides them", field=where
        )
    parts = [
        *_ids(src.principals, src.not_principals, _principal_id),
        *_ids(src.namespaces, src.not_namespaces, _namespace_id),
        *_ids(src.service_accounts, src.not_service_accounts, _service_account_id),
        *_ids(src.ip_blocks, src.not_ip_blocks, _ip_id),
        *_ids(src.remote_ip_blocks, src.not_remote_ip_blocks, _remote_ip_id),
    ]
    return _and_id(parts)


def _condition(c: Condition, where: str) -> tuple[list[rbac_pb2.Permission], list[rbac_pb2.Principal]]:
    m = HEADER_KEY.match(c.key)
    if m:
        name = m.group(1).lower()
        return _values(c.values, c.not_values, lambda v: _header_perm(name, v)), []
    if c.key == "connection.sni":
        sni = lambda v: rbac_pb2.Permission(requested_server_name=string_matcher(v))  # noqa: E731
        return _values(c.values, c.not_values, sni), []
    if c.key == "source.ip":
        return [], _ids(c.values, c.not_values, _ip_id)
    if c.key == "remote.ip":
        return [], _ids(c.values, c.not_values, _remote_ip_id)
    if c.key == "destination.ip":
        return _values(c.values, c.not_values, _destination_ip_perm), []
    if c.key == "destination.port":
        return _values(c.values, c.not_values, _port_perm), []
    if c.key == "source.principal":
        return [], _ids(c.values, c.not_values, _principal_id)
    if c.key == "source.namespace":
        return [], _ids(c.values, c.not_values, _namespace_id)
    raise NotCompilable(
        f"condition {c.key} needs the Python path (JWT claims are verified by envoykit)", field=where
    )


def _rule(rule: RuleSpec, where: str) -> rbac_pb2.Policy:
    perms: list[rbac_pb2.Permission] = []
    ids: list[rbac_pb2.Principal] = []
    if rule.to:
        perms.append(_or_perm([_operation(t.operation) for t in rule.to]))
    if rule.from_:
        ids.append(_or_id([_source(f.source, f"{where}.from.{i}.source") for i, f in enumerate(rule.from_)]))
    for i, c in enumerate(rule.when):
        p, q = _condition(c, f"{where}.when.{i}")
        perms += p
        ids += q
    return rbac_pb2.Policy(permissions=[_and_perm(perms)], principals=[_and_id(ids)])


def compile_policies(
    policies: Sequence[tuple[AuthorizationPolicy, YamlDocument]], workload: Workload | None = None
) -> list[hcm.HttpFilter]:
    """RBAC HTTP filters (DENY first, then ALLOW) enforcing ``policies`` as the Python path does.

    Args:
        policies: ``(policy, document)`` pairs; the document gives errors their file and line.
        workload: the Envoy's workload; policies whose namespace or selector exclude it are left
            out (:meth:`AuthorizationPolicy.selects`). ``None``: unknown, every policy is kept (as
            the Python path does when it cannot tell the destination).

    The DENY filter always carries ``envoykit-ambiguous-path`` first. Dry-run policies
    (``istio.io/dry-run``) go into ``shadow_rules`` (stat prefixes ``envoykit_deny_`` /
    ``envoykit_allow_``), never into ``rules``.

    Raises:
        NotCompilable: a policy needs JWT facts (requestPrincipals, ``request.auth.*`` conditions).
    """
    enforced: dict[str, dict[str, rbac_pb2.Policy]] = {
        "DENY": {AMBIGUOUS_PATH_POLICY: _ambiguous_path_policy()},
        "ALLOW": {},
    }
    shadow: dict[str, dict[str, rbac_pb2.Policy]] = {"DENY": {}, "ALLOW": {}}
    has_allow = has_shadow_allow = False
    for pol, doc in policies:
        if workload is not None and not pol.selects(workload):
            continue
        target = shadow if pol.dry_run else enforced
        has_allow |= pol.spec.action == "ALLOW" and not pol.dry_run
        has_shadow_allow |= pol.spec.action == "ALLOW" and pol.dry_run
        for i, rule in enumerate(pol.spec.rules):
            try:
                target[pol.spec.action][f"{pol.id}[{i}]"] = _rule(rule, f"spec.rules.{i}")
            except NotCompilable as exc:
                loc = [int(p) if p.isdigit() else p for p in (exc.field or "").split(".") if p]
                raise NotCompilable(
                    exc.message, file=doc.path, line=doc.line_of(loc), field=exc.field
                ) from None
    filters: list[hcm.HttpFilter] = []
    for action, enum in (("DENY", rbac_pb2.RBAC.DENY), ("ALLOW", rbac_pb2.RBAC.ALLOW)):
        wants_shadow = bool(shadow[action]) or (action == "ALLOW" and has_shadow_allow)
        if not enforced[action] and not wants_shadow and not (action == "ALLOW" and has_allow):
            continue
        cfg = http_rbac.RBAC()
        if enforced[action] or (action == "ALLOW" and has_allow):
            cfg.rules.CopyFrom(rbac_pb2.RBAC(action=enum, policies=enforced[action]))
        if wants_shadow:  # an ALLOW dry-run policy with no rules still "would deny" everything
            cfg.shadow_rules.CopyFrom(rbac_pb2.RBAC(action=enum, policies=shadow[action]))
            cfg.shadow_rules_stat_prefix = f"envoykit_{action.lower()}_"
        f = hcm.HttpFilter(name=f"envoy.filters.http.rbac.{action.lower()}")
        f.typed_config.Pack(cfg)
        filters.append(f)
    return filters


def compile_policy_dir(policy: Policy, workload: Workload | None = None) -> list[hcm.HttpFilter]:
    """Compile a loaded policy directory for ``workload`` (see :func:`compile_policies`); refuse it
    when it has Python rules.

    Raises:
        NotCompilable: Python rule modules, or a policy that needs JWT facts.
    """
    from_yaml = {pol.id for pol, _ in policy.yaml_policies}
    for r in policy.rules:
        if r.name not in from_yaml:
            file, _, line = r.source.rpartition(":")
            raise NotCompilable(
                f"Python rule {r.name} cannot run inside Envoy's RBAC filter", file=file, line=int(line)
            )
    return compile_policies(policy.yaml_policies, workload)
