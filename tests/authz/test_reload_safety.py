"""A policy being rewritten in place never changes a decision; an atomic rename applies.

Through a real Envoy under a bounded load: the policy file is truncated, written in two parts, emptied
(``: > rules.py``), and a YAML policy and ``authn.yaml`` are emptied, while three kinds of requests
flow; not one answer may change. Then a new version moved in with ``rename`` applies.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from envoykit.core import free_port
from tests.authz.conftest import authz_envoy_config

RULES = """from envoykit.authz import allow_rule, deny_rule


@deny_rule(paths=["/admin", "/admin/*"])
def no_admin(req):
    return True


@allow_rule()
def known_users(req):
    return req.headers.get("x-user") in ("alice", "bob")
"""

RULES_NEW = RULES.replace('("alice", "bob")', '("alice", "bob", "mallory")')

DENY_YAML = """kind: AuthorizationPolicy
metadata: {name: no-debug}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/debug/*"]}}]
"""

AUTHN = """api_keys:
  header: x-api-key
  keys:
    - {name: ci, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
"""

# (path, user) -> the answer every version of the policy under test gives
CASES = {
    ("/", "alice"): 200,
    ("/admin/x", "alice"): 403,
    ("/", "mallory"): 403,
    ("/debug/vars", "alice"): 403,
}


class Load:
    """Cycles through CASES from two client threads until stopped; records every answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.seen: dict[tuple[str, str], Counter[int]] = {c: Counter() for c in CASES}
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self.stop.is_set():
                for path, user in CASES:
                    r = c.get(f"http://127.0.0.1:{self.port}{path}", headers={"x-user": user})
                    self.seen[(path, user)][r.status_code] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_rewrites_in_place_never_change_a_decision(tmp_path: Path, envoy, echo, authz_server) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    rules, deny, authn = pol / "rules.py", pol / "deny.yaml", pol / "authn.yaml"
    rules.write_text(RULES)
    deny.write_text(DENY_YAML)
    authn.write_text(AUTHN)
    srv = authz_server(pol)
    port = free_port()
    envoy(authz_envoy_config(port, echo.port, srv.port))

    with Load(port) as load:
        time.sleep(0.5)
        # 1. truncate, leave it empty a while (longer than the settle interval), write it back
        with open(rules, "w"):
            pass
        time.sleep(1.0)
        rules.write_text(RULES)
        time.sleep(0.8)
        # 2. a two-part write: the first part alone is valid Python with only the DENY rule
        half = RULES.index("@allow_rule")
        with open(rules, "w") as f:
            f.write(RULES[:half])
            f.flush()
            time.sleep(0.1)
            f.write(RULES[half:])
        time.sleep(0.8)
        # 3. `: > rules.py`, then the YAML policy and authn.yaml emptied the same way
        for victim in (rules, deny, authn):
            original = victim.read_text()
            victim.write_bytes(b"")
            time.sleep(1.0)
            victim.write_text(original)
            time.sleep(0.8)
    bad = {c: dict(n) for c, n in load.seen.items() if set(n) != {CASES[c]}}
    assert not bad, f"decisions changed while the policy was rewritten: {bad}"
    assert sum(sum(n.values()) for n in load.seen.values()) > 200
    log = srv.log()
    for name in ("rules.py", "deny.yaml", "authn.yaml"):
        assert f"{pol / name}" in log and "refused" in log, log[-3000:]
    metrics = httpx.get(f"http://127.0.0.1:{srv.metrics_port}/metrics").text
    refused = [
        ln for ln in metrics.splitlines() if ln.startswith("envoykit_authz_policy_emptied_refused_total")
    ]
    assert refused and float(refused[0].split()[-1]) >= 4, refused

    # 4. an atomic rename applies the new version (mallory becomes a known user)
    tmp = pol / ".rules.py.tmp"
    tmp.write_text(RULES_NEW)
    os.replace(tmp, rules)
    deadline = time.monotonic() + 10
    with httpx.Client() as c:
        while time.monotonic() < deadline:
            if c.get(f"http://127.0.0.1:{port}/", headers={"x-user": "mallory"}).status_code == 200:
                break
            time.sleep(0.1)
        assert c.get(f"http://127.0.0.1:{port}/", headers={"x-user": "mallory"}).status_code == 200
        assert c.get(f"http://127.0.0.1:{port}/admin/x", headers={"x-user": "mallory"}).status_code == 403
