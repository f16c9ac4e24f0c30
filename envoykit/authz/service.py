"""The ``envoy.service.auth.v3.Authorization`` servicer: CheckRequest in, CheckResponse out.

Every failure inside the server is answered in-band as a deny, never as a gRPC error: a gRPC error
takes Envoy's failure path, where ``failure_mode_allow: true`` would let the request through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from envoykit.authz import metrics
from envoykit.authz.decisionlog import DecisionLog
from envoykit.authz.decisions import Deny
from envoykit.authz.engine import Engine, Verdict
from envoykit.authz.loader import Policy
from envoykit.authz.request import Request
from envoykit.authz.response import denied_response, response_bytes, response_for
from envoykit.authz.watchdog import RuleTimeout
from envoykit.core.logs import get_logger
from envoykit.core.reload import WatchedConfig

log = get_logger("authz")

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
CHECK_PATH = f"/{SERVICE_NAME}/Check"


class AuthorizationService(ea_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers ``Check`` from the current policy of ``policy`` (swapped atomically on reload).

    Args:
        policy: the watched policy directory.
        engine: evaluation settings (budgets, dry-run, statuses).
        decision_log: where decisions are written, or None.
    """

    def __init__(
        self, policy: WatchedConfig[Policy], engine: Engine, decision_log: DecisionLog | None = None
    ) -> None:
        self._policy = policy
        self._engine = engine
        self._decision_log = decision_log
        self._failure = Deny(engine.settings.failure_status, "authorization error")
        self._failure_response = denied_response(self._failure)
        self._failure_bytes = self._failure_response.SerializeToString()
        self._counters: dict[tuple[str, str], Any] = {}  # labelled DECISIONS children, by (result, rule)
        self._offload: Executor | None = None

    def Check(self, request: ea.CheckRequest, context: Any) -> ea.CheckResponse:
        """The grpcio servicer method (``--server grpcio``)."""
        start = time.perf_counter()
        try:
            req = Request.from_check_request(request)
        except Exception:
            return self._internal_error()
        return self.decide(req, start)

    def lean_check(self, request: ea.CheckRequest) -> bytes | Awaitable[bytes]:
        """The lean server's handler: decide inline on the event loop, or on a handler thread when a
        rule marked ``blocking`` applies (then bounded by the rule budget of every rule)."""
        start = time.perf_counter()
        try:
            req = Request.from_check_request(request)
        except Exception:
            return self._internal_error_bytes()
        blocking = self._policy.current.blocking_rules
        if blocking and self._offload is not None and any(r.applies(req) for r in blocking):
            return self._decide_offloaded(req, start)
        try:
            return self.decide_bytes(req, start)
        except RuleTimeout:  # a watchdog shot that landed after the engine returned
            return self._failure_bytes

    def use_offload(self, pool: Executor) -> None:
        """Decide requests that a ``blocking`` rule applies to on ``pool`` (the lean server)."""
        self._offload = pool

    async def _decide_offloaded(self, req: Request, start: float) -> bytes:
        assert self._offload is not None
        policy = self._policy.current
        bound = self._engine.settings.rule_budget_ms / 1000 * max(1, len(policy.rules))
        fut = asyncio.get_running_loop().run_in_executor(self._offload, self.decide_bytes, req, start)
        try:
            return await asyncio.wait_for(fut, bound)
        except TimeoutError:
            log.error("blocking rules overran their budget; request denied", bound_s=bound)
            metrics.RULE_ERRORS.labels("<blocking-timeout>").inc()
            metrics.DECISIONS.labels("deny", "<blocking-timeout>").inc()
            return self._failure_bytes

    def _internal_error(self) -> ea.CheckResponse:
        log.exception("check failed inside the server; answered deny")
        metrics.INTERNAL_ERRORS.inc()
        return self._failure_response

    def _internal_error_bytes(self) -> bytes:
        self._internal_error()
        return self._failure_bytes

    def decide(self, req: Request, start: float) -> ea.CheckResponse:
        """The CheckResponse for ``req`` (``start``: ``perf_counter()`` at arrival). Never raises for a
        rule's fault."""
        verdict = self._verdict(req, start)
        if verdict is None:
            return self._failure_response
        try:
            return response_for(verdict.decision)
        except Exception:
            return self._internal_error()

    def decide_bytes(self, req: Request, start: float) -> bytes:
        """:meth:`decide`, serialised (repeated answers come from a cache)."""
        verdict = self._verdict(req, start)
        if verdict is None:
            return self._failure_bytes
        try:
            return response_bytes(verdict.decision)
        except Exception:
            return self._internal_error_bytes()

    def _verdict(self, req: Request, start: float) -> Verdict | None:
        try:
            verdict = self._engine.check(self._policy.current, req)
        except Exception:
            self._internal_error()
            return None
        elapsed = time.perf_counter() - start
        if verdict.would_deny is not None:
            result = "dry_run_deny"
        else:
            result = "deny" if isinstance(verdict.decision, Deny) else "allow"
        counter = self._counters.get((result, verdict.rule))
        if counter is None:
            counter = self._counters[(result, verdict.rule)] = metrics.DECISIONS.labels(result, verdict.rule)
        counter.inc()
        for rule, outcome in verdict.shadow:  # dry-run rules (istio.io/dry-run): decided, not enforced
            if outcome.startswith("would deny"):
                metrics.DECISIONS.labels("dry_run_deny", rule).inc()
        metrics.CHECK_SECONDS.observe(elapsed)
        if verdict.error:
            metrics.RULE_ERRORS.labels(verdict.rule).inc()
        if self._decision_log is not None:
            self._decision_log.record(req, verdict, elapsed * 1e6)
        return verdict
