"""AuthorizationPolicy → a :class:`~envoykit.authz.rules.Rule` the engine runs (the Python path).

Every field reads one fact of the :class:`~envoykit.authz.request.Request`; :mod:`envoykit.authz.rbac`
maps the same fields onto Envoy's RBAC filter, and ``tests/authz/test_rbac_compile.py`` checks the two
decide alike through one Envoy:

=========================================  ==========================================  ===================
field / condition key                      request fact                                RBAC
=========================================  ==========================================  ===================
principals, source.principal               peer URI SAN, with or without ``spiffe://``  authenticated
namespaces, source.namespace               namespace of the peer's SPIFFE ID           authenticated (regex)
serviceAccounts                            ``<ns>/<sa>`` of the peer's SPIFFE ID        authenticated (regex)
ipBlocks, source.ip                        the connection's peer address               direct_remote_ip
remoteIpBlocks, remote.ip                  last ``x-forwarded-for`` entry, else peer   remote_ip
hosts                                      ``:authority``, with or without port         header (regex)
ports, destination.port                    the port the connection arrived on          destination_port
destination.ip                             the address the connection arrived on       destination_ip
methods / paths                            method / the normalised path                header / url_path
request.headers[h]                         every value of header ``h``                 header
connection.sni                             TLS SNI                                     requested_server_name
requestPrincipals, request.auth.*          the verified JWT (envoykit)                 (Python path only)
=========================================  ==========================================  ===================

Values take Istio's forms: exact, ``prefix*``, ``*suffix``, presence ``*``; IP fields take addresses
and CIDR blocks; ports exact numbers; paths also ``{*}``/``{**}`` templates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from envoykit.authz.istio import (
    CLAIM_KEY,
    HEADER_KEY,
    IP_KEYS,
    AuthorizationPolicy,
    Condition,
    Operation,
    RuleSpec,
    Source,
    Workload,
)
from envoykit.authz.paths import compiled_path_regex
from envoykit.authz.request import Request
from envoykit.authz.rules import Rule

_Str = tuple[str, ...]
Matcher = Callable[[str], bool]
Check = Callable[[Request], bool]


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

    def match(values: list[str]) -> bool:
        # plain loops, not any(<generator>): every policy runs these on every Check (issue 13)
        for v in values:
            v = fold(v)
            for m in ms:
                if m(v):
                    return True
        return False

    return match


def _principal_forms(p: str) -> list[str]:
    return [p, p[len("spiffe://") :]] if p.startswith("spiffe://") else [p]


def _ip_matcher(blocks: _Str) -> Callable[[list[str]], bool]:
    nets = [ipaddress.ip_network(b, strict=False) for b in blocks]

    def match(addrs: list[str]) -> bool:
        for a in addrs:
            try:
                ip = ipaddress.ip_address(a)
            except ValueError:
                continue
            if any(ip.version == n.version and ip in n for n in nets):
                return True
        return False

    return match


# ---- request facts, by Istio attribute name ---------------------------------------------------


def _principals(r: Request) -> list[str]:
    return _principal_forms(r.identity.principal) if r.identity.principal else []


def _namespaces(r: Request) -> list[str]:
    sp = r.identity.spiffe
    return [sp.namespace] if sp and sp.namespace else []


def _service_accounts(r: Request) -> list[str]:
    sp = r.identity.spiffe
    return [f"{sp.namespace}/{sp.service_account}"] if sp and sp.namespace and sp.service_account else []


def _request_principals(r: Request) -> list[str]:
    return [r.identity.request_principal] if r.identity.request_principal else []


_FACTS: dict[str, Callable[[Request], list[str]]] = {
    "source.ip": lambda r: [r.source_address],
    "remote.ip": lambda r: [r.remote_address],
    "destination.ip": lambda r: [r.destination_address],
    "destination.port": lambda r: [str(r.destination_port)],
    "source.namespace": _namespaces,
    "source.principal": _principals,
    "request.auth.principal": _request_principals,
    "connection.sni": lambda r: [r.sni] if r.sni else [],
}


def _claim_values(path: str, r: Request) -> list[str]:
    cur: Any = r.identity.claims
    if cur is None:
        return []
    for part in re.findall(r"\[([^\]]+)\]", path):
        if not isinstance(cur, dict) or part not in cur:
            return []
        cur = cur[part]
    if isinstance(cur, list):
        return [str(x) for x in cur]
    return [str(cur).lower() if isinstance(cur, bool) else str(cur)]


def condition_values(key: str, r: Request) -> list[str]:
    """The values of Istio attribute ``key`` for ``r`` (``[]`` when absent)."""
    fact = _FACTS.get(key)
    if fact is not None:
        return fact(r)
    if key == "request.auth.audiences":
        aud = r.identity.claim("aud")
        return [aud] if isinstance(aud, str) else [str(a) for a in aud or []]
    if key == "request.auth.presenter":
        azp = r.identity.claim("azp")
        return [azp] if isinstance(azp, str) else []
    m = HEADER_KEY.match(key)
    if m:
        return r.headers.getall(m.group(1))
    m = CLAIM_KEY.match(key)
    if m:
        return _claim_values(m.group(1), r)
    return []


# ---- compilation ------------------------------------------------------------------------------


def _pair(
    pos: _Str,
    neg: _Str,
    get: Callable[[Request], list[str]],
    match: Callable[[_Str], Callable[[list[str]], bool]],
) -> list[Check]:
    out: list[Check] = []
    if pos:
        m = match(pos)
        out.append(lambda r: m(get(r)))
    if neg:
        n = match(neg)
        out.append(lambda r: not n(get(r)))
    return out


def _strings(fold: Callable[[str], str] = str) -> Callable[[_Str], Callable[[list[str]], bool]]:
    return lambda patterns: _any(patterns, fold)


def _exact(patterns: _Str) -> Callable[[list[str]], bool]:
    want = frozenset(patterns)
    return lambda values: not want.isdisjoint(values)


def _paths(patterns: _Str) -> Callable[[list[str]], bool]:
    rx = [compiled_path_regex(p) for p in patterns]

    def match(values: list[str]) -> bool:
        for v in values:
            for x in rx:
                if x.fullmatch(v):
                    return True
        return False

    return match


def _all(checks: list[Check]) -> Check:
    """``r -> every check passes`` (a plain loop; no closure at all for zero or one check)."""
    if not checks:
        return lambda r: True
    if len(checks) == 1:
        return checks[0]

    def every(r: Request) -> bool:
        for c in checks:  # noqa: SIM110 - a loop, not all(<generator>): see _any
            if not c(r):
                return False
        return True

    return every


def _some(checks: list[Check]) -> Check:
    """``r -> some check passes`` (a plain loop)."""

    def some(r: Request) -> bool:
        for c in checks:  # noqa: SIM110 - a loop, not any(<generator>): see _any
            if c(r):
                return True
        return False

    return some


def _source(s: Source) -> Check:
    checks = [
        *_pair(s.principals, s.not_principals, _principals, _strings()),
        *_pair(s.request_principals, s.not_request_principals, _request_principals, _strings()),
        *_pair(s.namespaces, s.not_namespaces, _namespaces, _strings()),
        *_pair(s.service_accounts, s.not_service_accounts, _service_accounts, _exact),
        *_pair(s.ip_blocks, s.not_ip_blocks, _FACTS["source.ip"], _ip_matcher),
        *_pair(s.remote_ip_blocks, s.not_remote_ip_blocks, _FACTS["remote.ip"], _ip_matcher),
    ]
    return _all(checks)


def _operation(o: Operation) -> Check:
    checks = [
        *_pair(o.hosts, o.not_hosts, lambda r: [r.host, r.hostname], _strings(str.lower)),
        *_pair(o.ports, o.not_ports, _FACTS["destination.port"], _exact),
        *_pair(o.methods, o.not_methods, lambda r: [r.method], _strings()),
        *_pair(o.paths, o.not_paths, lambda r: [r.path], _paths),
    ]
    return _all(checks)


def _condition(c: Condition) -> Check:
    if c.key in IP_KEYS:
        kind: Callable[[_Str], Callable[[list[str]], bool]] = _ip_matcher
    elif c.key == "destination.port":
        kind = _exact
    else:
        kind = _strings()
    checks = _pair(c.values, c.not_values, lambda r: condition_values(c.key, r), kind)
    return _all(checks)


def _rule(rs: RuleSpec) -> Check:
    # Istio: some `from` matches (when any is given), and some `to`, and every `when`
    parts = []
    if rs.from_:
        parts.append(_some([_source(f.source) for f in rs.from_]))
    if rs.to:
        parts.append(_some([_operation(t.operation) for t in rs.to]))
    parts += [_condition(c) for c in rs.when]
    return _all(parts)


def compile_policy(policy: AuthorizationPolicy, source: str) -> Rule:
    """Turn one AuthorizationPolicy into a :class:`Rule`: it applies to the workloads the policy
    selects (:meth:`AuthorizationPolicy.selects`, from the request's destination) and matches per Istio."""
    fn = _some([_rule(r) for r in policy.spec.rules])

    scope = (lambda req: policy.selects(Workload.from_request(req))) if policy.scoped else None
    return Rule(
        name=policy.id,
        action=policy.spec.action,  # type: ignore[arg-type]  # validated: ALLOW or DENY
        fn=fn,
        dry_run=policy.dry_run,
        source=source,
        scope=scope,
    )
