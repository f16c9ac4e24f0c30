"""Declarative rules in the shape of Istio's AuthorizationPolicy, for authors who need no code.

Supported (https://istio.io/latest/docs/reference/config/security/authorization-policy/)::

    apiVersion: security.istio.io/v1          # optional
    kind: AuthorizationPolicy
    metadata: {name: backend-callers}
    spec:
      action: ALLOW                              # or DENY
      dryRun: false                              # envoykit extension (Istio uses an annotation)
      rules:
        - from:
            - source: {principals: [cluster.local/ns/default/sa/frontend], namespaces: [...],
                       requestPrincipals: ["https://issuer/*"], ipBlocks: [10.0.0.0/8], notX: ...}
          to:
            - operation: {hosts: [...], methods: [GET], paths: ["/api/*"], notPaths: [...]}
          when:
            - key: request.auth.claims[groups]
              values: [admins]

Semantics as Istio's: a rule matches when any ``from`` source, any ``to`` operation and every ``when``
condition match (missing parts match everything); the policy matches when any rule does. An ALLOW
policy with no rules matches nothing (so it denies everything); ``rules: [{}]`` matches everything.
Values accept Istio's forms: exact, prefix ``abc*``, suffix ``*abc`` and presence ``*``. Principals
match with or without the ``spiffe://`` scheme. Unsupported fields (``ports``, ``CUSTOM``, ``AUDIT``)
are refused at load time with the field path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from envoykit.authz.paths import check_path_pattern, compiled_path_regex
from envoykit.authz.request import Request
from envoykit.authz.rules import Rule

_Str = tuple[str, ...]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Source(_M):
    principals: _Str = ()
    not_principals: _Str = Field((), alias="notPrincipals")
    request_principals: _Str = Field((), alias="requestPrincipals")
    not_request_principals: _Str = Field((), alias="notRequestPrincipals")
    namespaces: _Str = ()
    not_namespaces: _Str = Field((), alias="notNamespaces")
    ip_blocks: _Str = Field((), alias="ipBlocks")
    not_ip_blocks: _Str = Field((), alias="notIpBlocks")

    @field_validator("ip_blocks", "not_ip_blocks")
    @classmethod
    def _cidrs(cls, v: _Str) -> _Str:
        for block in v:
            ipaddress.ip_network(block, strict=False)  # ValueError names the bad block
        return v


class Operation(_M):
    hosts: _Str = ()
    not_hosts: _Str = Field((), alias="notHosts")
    methods: _Str = ()
    not_methods: _Str = Field((), alias="notMethods")
    paths: _Str = ()
    not_paths: _Str = Field((), alias="notPaths")

    @field_validator("paths", "not_paths")
    @classmethod
    def _path_patterns(cls, v: _Str) -> _Str:
        return tuple(check_path_pattern(p) for p in v)


class From(_M):
    source: Source


class To(_M):
    operation: Operation


class Condition(_M):
    key: str
    values: _Str = ()
    not_values: _Str = Field((), alias="notValues")

    @field_validator("key")
    @classmethod
    def _known_key(cls, v: str) -> str:
        if v in _SIMPLE_KEYS or _HEADER_KEY.match(v) or _CLAIM_KEY.match(v):
            return v
        raise ValueError(f"unsupported condition key {v!r}")


class RuleSpec(_M):
    from_: tuple[From, ...] = Field((), alias="from")
    to: tuple[To, ...] = ()
    when: tuple[Condition, ...] = ()


class Spec(_M):
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    rules: tuple[RuleSpec, ...] = ()
    dry_run: bool = Field(False, alias="dryRun")


class Metadata(_M):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)


class AuthorizationPolicy(_M):
    """One AuthorizationPolicy document."""

    api_version: str = Field("security.istio.io/v1", alias="apiVersion")
    kind: Literal["AuthorizationPolicy"]
    metadata: Metadata
    spec: Spec


# ---- value matching --------------------------------------------------------------------------

Matcher = Callable[[str], bool]


def value_matcher(pattern: str) -> Matcher:
    """Istio string match: ``*`` (present), ``prefix*``, ``*suffix`` or exact."""
    if pattern == "*":
        return lambda v: v != ""
    if pattern.endswith("*"):
        p = pattern[:-1]
        return lambda v: v.startswith(p)
    if pattern.startswith("*"):
        s = pattern[1:]
        return lambda v: v.endswith(s)
    return lambda v: v == pattern


def _any(patterns: _Str, fold: Callable[[str], str] = str) -> Callable[[list[str]], bool]:
    ms = [value_matcher(fold(p)) for p in patterns]
    return lambda values: any(m(fold(v)) for m in ms for v in values)


def _principal_forms(p: str) -> list[str]:
    return [p, p[len("spiffe://") :]] if p.startswith("spiffe://") else [p]


_SIMPLE_KEYS = {
    "source.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "connection.sni",
}
_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")
_CLAIM_KEY = re.compile(r"^request\.auth\.claims((?:\[[^\]]+\])+)$")


def _condition_values(key: str, req: Request) -> list[str]:
    ident = req.identity
    if key == "source.ip":
        return [req.source_address]
    if key == "source.namespace":
        return [ident.spiffe.namespace or ""] if ident.spiffe else []
    if key == "source.principal":
        return _principal_forms(ident.principal) if ident.principal else []
    if key == "request.auth.principal":
        return [ident.request_principal] if ident.request_principal else []
    if key == "request.auth.audiences":
        aud = ident.claim("aud")
        return [aud] if isinstance(aud, str) else [str(a) for a in aud or []]
    if key == "request.auth.presenter":
        azp = ident.claim("azp")
        return [azp] if isinstance(azp, str) else []
    if key == "connection.sni":
        return [req.sni] if req.sni else []
    m = _HEADER_KEY.match(key)
    if m:
        return req.headers.getall(m.group(1))
    m = _CLAIM_KEY.match(key)
    if m and ident.claims is not None:
        cur: Any = ident.claims
        for part in re.findall(r"\[([^\]]+)\]", m.group(1)):
            if not isinstance(cur, dict) or part not in cur:
                return []
            cur = cur[part]
        if isinstance(cur, list):
            return [str(x) for x in cur]
        return [str(cur).lower() if isinstance(cur, bool) else str(cur)]
    return []


def _ip_matcher(blocks: _Str) -> Callable[[str], bool]:
    nets = [ipaddress.ip_network(b, strict=False) for b in blocks]

    def match(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in nets)

    return match


def _values_check(
    patterns: _Str, get: Callable[[Request], list[str]], negate: bool, fold: Callable[[str], str] = str
) -> Callable[[Request], bool]:
    m = _any(patterns, fold)
    if negate:
        return lambda r: not m(get(r))
    return lambda r: m(get(r))


def _compile_source(s: Source) -> Callable[[Request], bool]:
    checks: list[Callable[[Request], bool]] = []

    def principals(r: Request) -> list[str]:
        return _principal_forms(r.identity.principal) if r.identity.principal else []

    def req_principals(r: Request) -> list[str]:
        return [r.identity.request_principal] if r.identity.request_principal else []

    def namespaces(r: Request) -> list[str]:
        sp = r.identity.spiffe
        return [sp.namespace] if sp and sp.namespace else []

    for pos, neg, get in (
        (s.principals, s.not_principals, principals),
        (s.request_principals, s.not_request_principals, req_principals),
        (s.namespaces, s.not_namespaces, namespaces),
    ):
        if pos:
            checks.append(_values_check(pos, get, False))
        if neg:
            checks.append(_values_check(neg, get, True))
    if s.ip_blocks:
        ip = _ip_matcher(s.ip_blocks)
        checks.append(lambda r: ip(r.source_address))
    if s.not_ip_blocks:
        nip = _ip_matcher(s.not_ip_blocks)
        checks.append(lambda r: not nip(r.source_address))
    return lambda r: all(c(r) for c in checks)


def _compile_operation(o: Operation) -> Callable[[Request], bool]:
    checks: list[Callable[[Request], bool]] = []

    def hosts(r: Request) -> list[str]:
        return [r.host, r.hostname]

    def methods(r: Request) -> list[str]:
        return [r.method]

    specs: list[tuple[_Str, _Str, Callable[[Request], list[str]], Callable[[str], str]]] = [
        (o.hosts, o.not_hosts, hosts, str.lower),
        (o.methods, o.not_methods, methods, str),
    ]
    for pos, neg, get, fold in specs:
        if pos:
            checks.append(_values_check(pos, get, False, fold))
        if neg:
            checks.append(_values_check(neg, get, True, fold))
    # paths: exact/prefix/suffix/presence and {*}/{**} templates, one regex each (envoykit.authz.paths)
    if o.paths:
        rx = [compiled_path_regex(p) for p in o.paths]
        checks.append(lambda r: any(x.fullmatch(r.path) for x in rx))
    if o.not_paths:
        nrx = [compiled_path_regex(p) for p in o.not_paths]
        checks.append(lambda r: not any(x.fullmatch(r.path) for x in nrx))
    return lambda r: all(c(r) for c in checks)


def _compile_condition(c: Condition) -> Callable[[Request], bool]:
    pos = _any(c.values) if c.values else None
    neg = _any(c.not_values) if c.not_values else None

    def check(r: Request) -> bool:
        values = _condition_values(c.key, r)
        if pos is not None and not pos(values):
            return False
        return not (neg is not None and neg(values))

    return check


def _compile_rule(rs: RuleSpec) -> Callable[[Request], bool]:
    froms = [_compile_source(f.source) for f in rs.from_]
    tos = [_compile_operation(t.operation) for t in rs.to]
    whens = [_compile_condition(c) for c in rs.when]

    def match(r: Request) -> bool:
        if froms and not any(f(r) for f in froms):
            return False
        if tos and not any(t(r) for t in tos):
            return False
        return all(w(r) for w in whens)

    return match


def compile_policy(policy: AuthorizationPolicy, source: str) -> Rule:
    """Turn one AuthorizationPolicy into a :class:`Rule` that always applies and matches per Istio."""
    matchers = [_compile_rule(r) for r in policy.spec.rules]

    def fn(req: Request) -> bool:
        return any(m(req) for m in matchers)

    return Rule(
        name=policy.metadata.name,
        action=policy.spec.action,
        fn=fn,
        dry_run=policy.spec.dry_run,
        source=source,
    )
