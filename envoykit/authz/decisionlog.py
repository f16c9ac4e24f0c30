"""The decision log: one JSON line per decision (sampled), for audits and debugging.

Fields: ``time`` (RFC 3339 UTC), ``decided_by`` (``server``; the native gate's lines, which Envoy
writes, say ``envoy``: :mod:`envoykit.core.gatelog`), ``request_id`` (Envoy's x-request-id), ``principal`` (mTLS peer),
``request_principal`` (JWT ``iss/sub``), ``method``, ``host``, ``path``, ``rule`` (the deciding rule),
``result`` (``allow``/``deny``), ``status`` (HTTP status of a deny), ``enforced`` (false under dry-run),
``shadow`` (dry-run rules' outcomes), ``error``, ``duration_us``.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import IO, Any

from envoykit.authz.decisions import Deny
from envoykit.authz.engine import Verdict
from envoykit.authz.request import Request


class DecisionLog:
    """Writes sampled decisions to ``path`` (``-`` for stdout).

    Args:
        path: file to append to, or ``-``.
        sample_allow / sample_deny: fraction (0..1) of allows / denies written; denies default to all.
    """

    def __init__(self, path: str, sample_allow: float = 1.0, sample_deny: float = 1.0) -> None:
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.sample_allow = sample_allow
        self.sample_deny = sample_deny
        self._lock = threading.Lock()

    def record(self, req: Request, verdict: Verdict, duration_us: float) -> None:
        """Write one line for this decision if it is sampled."""
        effective = verdict.would_deny or verdict.decision
        is_deny = isinstance(effective, Deny)
        rate = self.sample_deny if is_deny else self.sample_allow
        if rate < 1.0 and random.random() >= rate:
            return
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            "decided_by": "server",
            "request_id": req.request_id,
            "principal": req.identity.principal,
            "request_principal": req.identity.request_principal,
            "method": req.method,
            "host": req.host,
            "path": req.path,
            "rule": verdict.rule,
            "result": "deny" if is_deny else "allow",
            "status": effective.status if isinstance(effective, Deny) else None,
            "enforced": verdict.would_deny is None,
            "reason": verdict.reason,
            "duration_us": round(duration_us, 1),
        }
        if verdict.shadow:
            line["shadow"] = dict(verdict.shadow)
        if verdict.error:
            line["error"] = verdict.error
        text = json.dumps(line, separators=(",", ":"))
        with self._lock:
            self._out.write(text + "\n")

    def close(self) -> None:
        """Flush and close (stdout is only flushed)."""
        self._out.flush()
        if self._out is not sys.stdout:
            self._out.close()
