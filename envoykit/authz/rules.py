"""The rule API policy authors use, and the pre-matching that decides where a rule runs.

A policy module is plain Python::

    from envoykit.authz import Request, allow, allow_rule, deny, deny_rule

    @deny_rule(paths=["/admin/*"])
    def admin_needs_token(req: Request):
        return req.identity.claims is None          # truthy: this DENY rule matches

    @allow_rule(hosts=["backend*"], methods=["GET", "POST"])
    def frontend_only(req: Request):
        if req.identity.principal.endswith("/sa/frontend"):
            return allow(headers={"x-caller": "frontend"})

A rule *applies* to a request when its ``hosts``, ``paths`` and ``methods`` globs match (all given ones);
only then does its function run. An ALLOW rule *matches* when the function returns something truthy
(``True`` or an :class:`~envoykit.authz.decisions.Allow`); a DENY rule matches likewise (``True`` or a
:class:`~envoykit.authz.decisions.Deny` to shape the answer). The evaluation order is Istio's
(https://istio.io/latest/docs/concepts/security/#implicit-enablement): any matching DENY denies; else if
ALLOW rules apply and none matches, deny; else allow.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from envoykit.authz.request import Request

Action = Literal["ALLOW", "DENY"]
RuleFn = Callable[[Request], Any]

RULE_ATTR = "__envoykit_rule__"


def glob_to_regex(pattern: str, *, case_insensitive: bool = False) -> re.Pattern[str]:
    """Compile a glob where ``*`` matches any run of characters (``/`` included) and ``?`` one character."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", re.IGNORECASE if case_insensitive else 0)


@dataclass(slots=True)
class Rule:
    """One compiled rule.

    Attributes:
        name: unique within the policy (defaults to ``module.function``).
        action: ``ALLOW`` or ``DENY``.
        fn: the rule function, ``fn(request) -> truthy | Allow | Deny | None``.
        hosts / paths / methods: pre-match globs (``None``: any); hosts match with or without port.
        dry_run: decide and log, but never enforce this rule.
        blocking: the rule waits (I/O, sleeps): requests it applies to are decided on a handler
            thread instead of the server's event loop, so they do not stall other requests.
        source: ``file:line`` of the definition, for errors and the decision log.
        scope: ``scope(request)`` says whether the rule applies to the request's destination
            workload (AuthorizationPolicy namespace and selector); ``None``: every workload.
    """

    name: str
    action: Action
    fn: RuleFn
    hosts: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    dry_run: bool = False
    blocking: bool = False
    source: str = ""
    scope: Callable[[Request], bool] | None = None
    _host_re: list[re.Pattern[str]] = field(default_factory=list, repr=False)
    _path_re: list[re.Pattern[str]] = field(default_factory=list, repr=False)
    _methods: frozenset[str] = field(default_factory=frozenset, repr=False)

    def __post_init__(self) -> None:
        self._host_re = [glob_to_regex(h, case_insensitive=True) for h in self.hosts or ()]
        self._path_re = [glob_to_regex(p) for p in self.paths or ()]
        self._methods = frozenset(m.upper() for m in self.methods or ())

    def applies(self, req: Request) -> bool:
        """True when the rule's scope takes ``req`` and every given pre-match (method, host, path)
        matches it."""
        if self.scope is not None and not self.scope(req):
            return False
        return self.prematches(req)

    def prematches(self, req: Request) -> bool:
        """True when every given pre-match (method, host, path) matches ``req``: a function of
        ``(req.method, req.host, req.path)`` only, so the engine caches it by those three."""
        # plain loops: this runs for every rule on every Check, and generators cost more than the match
        if self._methods and req.method not in self._methods:
            return False
        if self._host_re:
            host, hostname = req.host, req.hostname
            for r in self._host_re:
                if r.match(host) or r.match(hostname):
                    break
            else:
                return False
        if self._path_re:
            path = req.path
            for r in self._path_re:  # noqa: SIM110 - a loop, not any(<generator>): see above
                if r.match(path):
                    return True
            return False
        return True


def _as_tuple(v: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    return (v,) if isinstance(v, str) else tuple(v)


def _decorator(
    action: Action,
    hosts: Iterable[str] | str | None,
    paths: Iterable[str] | str | None,
    methods: Iterable[str] | str | None,
    name: str | None,
    dry_run: bool,
    blocking: bool,
) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        if inspect.iscoroutinefunction(fn):
            # Rules run inline on the server's event loop (or on a handler thread with blocking=True);
            # an awaitable result would never be awaited.
            raise TypeError(f"rule {fn.__qualname__} must be a plain function (def), not async def")
        try:
            inspect.signature(fn).bind(None)
        except TypeError:
            raise TypeError(f"rule {fn.__qualname__} must take exactly one argument (the request)") from None
        code = getattr(fn, "__code__", None)
        source = f"{code.co_filename}:{code.co_firstlineno}" if code else ""
        rule = Rule(
            name=name or fn.__name__,
            action=action,
            fn=fn,
            hosts=_as_tuple(hosts),
            paths=_as_tuple(paths),
            methods=_as_tuple(methods),
            dry_run=dry_run,
            blocking=blocking,
            source=source,
        )
        setattr(fn, RULE_ATTR, rule)
        return fn

    return wrap


def allow_rule(
    *,
    hosts: Iterable[str] | str | None = None,
    paths: Iterable[str] | str | None = None,
    methods: Iterable[str] | str | None = None,
    name: str | None = None,
    dry_run: bool = False,
    blocking: bool = False,
) -> Callable[[RuleFn], RuleFn]:
    """Declare an ALLOW rule (see the module docstring for matching and order).

    ``blocking=True`` marks a rule that waits (network, disk, sleep): see :class:`Rule`.

    Raises:
        TypeError: the function does not take exactly one argument, or is ``async def``.
    """
    return _decorator("ALLOW", hosts, paths, methods, name, dry_run, blocking)


def deny_rule(
    *,
    hosts: Iterable[str] | str | None = None,
    paths: Iterable[str] | str | None = None,
    methods: Iterable[str] | str | None = None,
    name: str | None = None,
    dry_run: bool = False,
    blocking: bool = False,
) -> Callable[[RuleFn], RuleFn]:
    """Declare a DENY rule (see the module docstring for matching and order).

    ``blocking=True`` marks a rule that waits (network, disk, sleep): see :class:`Rule`.

    Raises:
        TypeError: the function does not take exactly one argument, or is ``async def``.
    """
    return _decorator("DENY", hosts, paths, methods, name, dry_run, blocking)
