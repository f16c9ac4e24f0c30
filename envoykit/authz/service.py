"""The ``envoy.service.auth.v3.Authorization`` servicer: CheckRequest in, CheckResponse out.

Every failure inside the server is answered in-band as a deny, never as a gRPC error: a gRPC error
takes Envoy's failure path, where ``failure_mode_allow: true`` would let the request through.
"""

from __future__ import annotations

import time
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from envoykit.authz import metrics
from envoykit.authz.decisionlog import DecisionLog
from envoykit.authz.decisions import Deny
from envoykit.authz.engine import Engine
from envoykit.authz.loader import Policy
from envoykit.authz.request import Request
from envoykit.authz.response import denied_response, response_for
from envoykit.core.logs import get_logger
from envoykit.core.reload import WatchedConfig

log = get_logger("authz")

SERVICE_NAME = "envoy.service.auth.v3.Authorization"


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

    def Check(self, request: ea.CheckRequest, context: Any) -> ea.CheckResponse:
        start = time.perf_counter()
        try:
            req = Request.from_check_request(request)
            verdict = self._engine.check(self._policy.current, req)
            resp = response_for(verdict.decision)
        except Exception:
            log.exception("check failed inside the server; answered deny")
            metrics.INTERNAL_ERRORS.inc()
            return denied_response(self._failure)
        elapsed = time.perf_counter() - start
        if verdict.would_deny is not None:
            result = "dry_run_deny"
        else:
            result = "deny" if isinstance(verdict.decision, Deny) else "allow"
        metrics.DECISIONS.labels(result, verdict.rule).inc()
        for rule, outcome in verdict.shadow:  # dry-run rules (istio.io/dry-run): decided, not enforced
            if outcome.startswith("would deny"):
                metrics.DECISIONS.labels("dry_run_deny", rule).inc()
        metrics.CHECK_SECONDS.observe(elapsed)
        if verdict.error:
            metrics.RULE_ERRORS.labels(verdict.rule).inc()
        if self._decision_log is not None:
            self._decision_log.record(req, verdict, elapsed * 1e6)
        return resp
