"""Decide one request: authenticate, run the rules in Istio's order, apply dry-run.

Order (https://istio.io/latest/docs/concepts/security/#implicit-enablement):

0. An ambiguous path (``/..;/``, ``%3B``: see :mod:`envoykit.authz.paths`) → deny (403).
1. A credential that is present but does not verify (bad JWT, unknown API key) → 401.
2. Any DENY rule that applies and matches → deny.
3. If ALLOW rules apply and none matches → deny (403).
4. Otherwise → allow (with the mutations of the matching ALLOW rule, if any).

A rule that raises, returns something that is not a decision, or overruns its budget denies the request
with ``failure_status`` and is logged with its name; the server lives on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any

from envoykit.authz.decisions import Allow, Deny
from envoykit.authz.identity import Identity
from envoykit.authz.jwt_verify import TokenError
from envoykit.authz.loader import Policy
from envoykit.authz.request import Request
from envoykit.authz.rules import Rule
from envoykit.authz.watchdog import IDLE, RuleTimeout, Watchdog
from envoykit.core.logs import get_logger

log = get_logger("authz")

ALLOWED = Allow()
DEFAULT_DENY_BODY = "RBAC: access denied"
#: Shadow entry when dry-run ALLOW rules applied and none matched (their would-be deny).
DRY_RUN_ALLOW = "<dry-run-allow>"
_PREMATCH_CACHE_MAX = 4096


@dataclass(frozen=True)
class EngineSettings:
    """Server-wide behaviour.

    Attributes:
        rule_budget_ms: time one rule may take before the request is denied (ms).
        failure_status: HTTP status sent when a rule fails or overruns (403 by default).
        deny_status: HTTP status when no ALLOW rule matched or a DENY rule returned ``True``.
        dry_run: decide and log everything, enforce nothing (every request is allowed).
    """

    rule_budget_ms: float = 50.0
    failure_status: int = 403
    deny_status: int = 403
    dry_run: bool = False


@dataclass(slots=True)
class Verdict:
    """The outcome of one check.

    Attributes:
        decision: what Envoy is told (after global dry-run).
        rule: name of the deciding rule; ``<ambiguous-path>``, ``<authn>`` for a bad credential, ``<no-allow-match>`` when ALLOW
            rules applied and none matched, ``<default>`` when nothing applied.
        reason: short words for the decision log.
        would_deny: the decision that dry-run turned into an allow, if any.
        shadow: ``(rule, outcome)`` of dry-run rules.
        error: set when a rule failed.
    """

    decision: Allow | Deny
    rule: str
    reason: str = ""
    would_deny: Deny | None = None
    shadow: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


class RuleFailure(Exception):
    def __init__(self, rule: Rule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class Engine:
    """Evaluates a :class:`~envoykit.authz.loader.Policy` for a :class:`Request`."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self._budget_s = self.settings.rule_budget_ms / 1000
        self._watchdog = Watchdog(self._budget_s)
        # (method, host, path) -> the DENY and ALLOW rules whose pre-matches take it, for one policy
        self._prematched: dict[tuple[str, str, str], tuple[tuple[Rule, ...], tuple[Rule, ...]]] = {}
        self._prematched_for: Policy | None = None

    def candidates(self, policy: Policy, req: Request) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """The DENY and ALLOW rules of ``policy`` whose pre-matches (method, host, path globs) take
        ``req``, in evaluation order; their scopes are not checked here.

        Cached by ``(method, host, path)`` for the current policy (at most 4096 entries, then the cache
        starts over): most traffic repeats a few routes, and matching every rule's globs was a good part
        of a Check's cost (issue 13).
        """
        cache = self._prematched
        if self._prematched_for is not policy:  # a reload: start over (racing threads only redo work)
            cache = self._prematched = {}
            self._prematched_for = policy
        key = (req.method, req.host, req.path)
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= _PREMATCH_CACHE_MAX:
                cache.clear()
            hit = cache[key] = (
                tuple(r for r in policy.deny_rules if r.prematches(req)),
                tuple(r for r in policy.allow_rules if r.prematches(req)),
            )
        return hit

    def authenticate(
        self, policy: Policy, req: Request, claims: dict[str, Any] | None = None
    ) -> Identity | Deny | None:
        """The verified identity of ``req``, a 401 Deny for a credential that does not verify, or None
        when the policy verifies nothing (``req.identity``, the mTLS peer, stands; no header is read).

        The identity is ``req.identity`` with the JWT's claims and the API key's name added when they
        are present and valid. ``claims``: a token that already verified (the cases of ``envoykit authz
        test``); no JWT is looked for then. ``req`` is not changed.
        """
        authn = policy.authenticator
        if claims is None and not authn.config.jwt and authn.config.api_keys is None:
            return None
        ident = req.identity
        if claims is not None:
            principal = f"{claims.get('iss')}/{claims.get('sub')}"
            ident = replace(ident, claims=claims, request_principal=principal)
        else:
            token = authn.extract_token(req.headers, req.cookie)
            if token is not None:
                try:
                    verified, iss = authn.verify(token)
                except TokenError as exc:
                    return Deny(
                        401, f"invalid token: {exc}", {"www-authenticate": 'Bearer error="invalid_token"'}
                    )
                principal = f"{verified.get('iss')}/{verified.get('sub')}"
                ident = replace(ident, claims=verified, issuer=iss.issuer, request_principal=principal)
        if authn.config.api_keys is not None and authn.config.api_keys.header in req.headers:
            name = authn.api_key_name(req.headers)
            if name is None:
                return Deny(401, "unknown API key")
            ident = replace(ident, api_key=name)
        return ident

    def check(self, policy: Policy, req: Request, claims: dict[str, Any] | None = None) -> Verdict:
        """Decide ``req``. Never raises for a rule's fault: failures become denies.

        ``claims``: a token that already verified (see :meth:`authenticate`).
        """
        watchdog = self._watchdog
        try:
            tid = watchdog.enter()
            try:
                verdict = self._evaluate(policy, req, tid, claims)
            finally:
                watchdog.leave(tid)  # a watchdog shot lands before this returns
        except RuleFailure as exc:
            log.error(
                "rule failed, request denied", rule=exc.rule.name, source=exc.rule.source, error=str(exc)
            )
            verdict = Verdict(
                Deny(self.settings.failure_status, f"authorization rule {exc.rule.name} failed"),
                exc.rule.name,
                "rule failed",
                error=str(exc),
            )
        except RuleTimeout:  # a shot that landed between rules: a rule did overrun
            log.error("a rule overran its budget, request denied", budget_ms=self.settings.rule_budget_ms)
            verdict = Verdict(
                Deny(self.settings.failure_status, "authorization rule overran"),
                "<timeout>",
                "overran",
            )
        if self.settings.dry_run and isinstance(verdict.decision, Deny):
            verdict.would_deny = verdict.decision
            verdict.decision = ALLOWED
            verdict.reason = f"dry-run: {verdict.reason}"
        return verdict

    def _call(self, rule: Rule, req: Request, tid: int) -> Any:
        """Run one rule under its budget (the watchdog for a rule that never returns, the clock for
        one that returns late); a raise, timeout or overrun becomes :class:`RuleFailure`."""
        deadlines = self._watchdog.deadlines  # arm/disarm as plain stores: this runs for every rule
        start = perf_counter()
        deadlines[tid] = start + self._budget_s
        try:
            result = rule.fn(req)
        except RuleTimeout:
            raise RuleFailure(rule, f"overran its budget of {self.settings.rule_budget_ms} ms") from None
        except Exception as exc:
            raise RuleFailure(rule, f"{type(exc).__name__}: {exc}") from exc
        finally:
            deadlines[tid] = IDLE
        if perf_counter() - start > self._budget_s:
            raise RuleFailure(rule, f"overran its budget of {self.settings.rule_budget_ms} ms")
        return result

    def _evaluate(self, policy: Policy, req: Request, tid: int, claims: dict[str, Any] | None) -> Verdict:
        if req.path_ambiguity is not None:
            # Upstreams disagree on what such a path names; no rule can be trusted to have seen it.
            deny = Deny(self.settings.deny_status, DEFAULT_DENY_BODY)
            return Verdict(deny, "<ambiguous-path>", req.path_ambiguity)
        ident = self.authenticate(policy, req, claims)
        if isinstance(ident, Deny):
            return Verdict(ident, "<authn>", ident.body)
        if ident is not None:
            req.identity = ident  # the one attribute set after the view is built: rules read it
        shadow: list[tuple[str, str]] = []
        deny_rules, allow_rules = self.candidates(policy, req)
        for rule in deny_rules:
            if rule.scope is not None and not rule.scope(req):
                continue
            result = self._call(rule, req, tid)
            if not result:
                continue
            if isinstance(result, Deny):
                deny = result
            elif result is True or not isinstance(result, Allow):
                deny = Deny(self.settings.deny_status, DEFAULT_DENY_BODY)
            else:
                raise RuleFailure(
                    rule, "a DENY rule returned allow(); return True/deny() to match, falsy not to"
                )
            if rule.dry_run:
                shadow.append((rule.name, f"would deny {deny.status}"))
                continue
            return Verdict(deny, rule.name, "deny rule matched", shadow=shadow)
        applied = False
        shadow_allow = 0  # dry-run ALLOW rules: 0 none applied, 1 applied none matched, 2 one matched
        for rule in allow_rules:
            if rule.scope is not None and not rule.scope(req):
                continue
            result = self._call(rule, req, tid)
            if rule.dry_run:
                shadow.append((rule.name, "would match" if result else "would not match"))
                shadow_allow = max(shadow_allow, 2 if result else 1)
                continue
            applied = True
            if not result:
                continue
            if isinstance(result, Deny):
                return Verdict(result, rule.name, "allow rule denied", shadow=shadow)
            return Verdict(
                result if isinstance(result, Allow) else ALLOWED,
                rule.name,
                "allow rule matched",
                shadow=shadow,
            )
        if shadow_allow == 1:  # as Envoy's ALLOW shadow_rules: none of the dry-run ALLOW policies matched
            shadow.append((DRY_RUN_ALLOW, f"would deny {self.settings.deny_status}"))
        if applied:
            deny = Deny(self.settings.deny_status, DEFAULT_DENY_BODY)
            return Verdict(deny, "<no-allow-match>", "allow rules applied, none matched", shadow=shadow)
        return Verdict(ALLOWED, "<default>", "no rule applied", shadow=shadow)
