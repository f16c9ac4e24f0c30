"""``envoykit demo``: real traffic through the running mesh's ingress, and what happened, checked.

Each scenario sends requests and returns a :class:`Check` (a verdict with the figures behind it); the
end-to-end test runs the same scenarios and asserts on them, so the demo a person watches is the test.

Scenarios (paths and headers are those of the demo mesh, examples/mesh.yaml):

* ``mesh_path``: ``GET /`` reaches backend through frontend and both sidecars; backend saw frontend's
  SPIFFE identity (from the client certificate its sidecar verified).
* ``outside_refused``: a plain client calling backend's sidecar directly (no mesh certificate) is refused.
* ``wrong_identity``: a client with a mesh certificate of another service account is refused by authz.
* ``jwt``: ``/admin`` without a token is refused (401/403); with a token from ``envoykit token``, 200.
* ``rate_limit``: one client id sending past its limit gets 429s; requests before it pass.
* ``canary``: the share of backend v1/v2 over many requests, against the configured weights.
* ``wasm``: the header the Wasm filter adds is on the response.
* ``egress_refused``: a host outside the egress gateway's allow-list gets 403.
* ``telemetry``: per-service request counts and latency percentiles from the telemetry server.
* ``decisions``: allows and denies per authz rule, hits and over-limit per rate-limit rule.
"""

from __future__ import annotations

import math
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from envoykit.mesh import metrics as pm
from envoykit.mesh.plan import Plan

CLIENT_HEADER = "x-client-id"


@dataclass
class Check:
    """The outcome of one scenario: ``ok``, a one-line ``summary`` and the ``figures`` behind it."""

    name: str
    ok: bool
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoTarget:
    """Where the demo sends traffic and reads metrics, taken from a plan (see :meth:`from_plan`)."""

    ingress: str
    telemetry_metrics: str
    backend_inbound: list[str]
    canary_weights: dict[str, int]
    wasm_header: str
    ratelimit_per_client: int
    token_key: str = ""
    egress: str = ""
    authz_metrics: str = ""
    ratelimit_metrics: str = ""
    ca_state_dir: str = ""
    trust_domain: str = ""

    @classmethod
    def from_plan(cls, plan: Plan) -> DemoTarget:
        """Read the facts the planner recorded in ``plan.info['demo']``.

        Raises:
            KeyError: the plan has no ingress or was made by an older runner.
        """
        demo = plan.info["demo"]
        if not plan.ingress:
            raise KeyError("the mesh has no ingress gateway")
        return cls(
            ingress=plan.ingress,
            telemetry_metrics=demo.get("telemetry_metrics", ""),
            backend_inbound=demo.get("backend_inbound", []),
            canary_weights=demo.get("canary_weights", {}),
            wasm_header=demo.get("wasm_header", ""),
            ratelimit_per_client=int(demo.get("ratelimit_per_client", 0)),
            token_key=demo.get("token_key", ""),
            egress=demo.get("egress", ""),
            authz_metrics=demo.get("authz_metrics", ""),
            ratelimit_metrics=demo.get("ratelimit_metrics", ""),
            ca_state_dir=demo.get("ca_state_dir", ""),
            trust_domain=demo.get("trust_domain", ""),
        )


def _client(target: DemoTarget, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(base_url=target.ingress, timeout=timeout, verify=False)


def mesh_path(target: DemoTarget) -> Check:
    """``GET /`` through ingress → frontend → backend; backend reports frontend's identity."""
    with _client(target) as c:
        r = c.get("/", headers={CLIENT_HEADER: f"demo-{uuid.uuid4().hex[:8]}"})
    try:
        body = r.json()
    except ValueError:
        body = {}
    backend = body.get("backend") if isinstance(body.get("backend"), dict) else {}
    identity = backend.get("identity", {})
    xfcc = identity.get("x-forwarded-client-cert", "")
    seen = " ".join(str(v) for v in identity.values())
    ok = r.status_code == 200 and backend.get("service") == "backend" and "/sa/frontend" in seen
    return Check(
        "mesh_path",
        ok,
        f"{r.status_code}: frontend -> backend {backend.get('version', '?')}; backend saw identity "
        f"{_principal(seen) or 'none'}",
        {
            "status": r.status_code,
            "backend_version": backend.get("version"),
            "xfcc": xfcc,
            "identity": identity,
        },
    )


def _principal(text: str) -> str:
    for part in text.replace(";", " ").replace(",", " ").replace('"', " ").split():
        if part.startswith(("URI=spiffe://", "spiffe://")):
            return part.removeprefix("URI=")
    return ""


def outside_refused(target: DemoTarget) -> Check:
    """Plain HTTP straight to each backend sidecar's inbound port, without a mesh certificate."""
    outcomes = {}
    for addr in target.backend_inbound:
        host, _, port = addr.rpartition(":")
        try:
            r = httpx.get(f"http://{host}:{port}/", timeout=5)
            outcomes[addr] = f"answered {r.status_code}"
        except httpx.HTTPError as exc:
            outcomes[addr] = f"refused ({type(exc).__name__})"
    ok = bool(outcomes) and all(v.startswith("refused") for v in outcomes.values())
    return Check("outside_refused", ok, "; ".join(f"{k}: {v}" for k, v in outcomes.items()), outcomes)


def wrong_identity(target: DemoTarget) -> Check:
    """A client with a valid mesh certificate for another service account (``intruder``) calls
    backend's sidecar: mTLS accepts it, the authz policy refuses it (only frontend may call backend)."""
    identity = f"spiffe://{target.trust_domain}/ns/default/sa/intruder"
    with tempfile.TemporaryDirectory(prefix="envoykit-demo-") as tmp:
        issue = ["ca", "issue", identity, "--state-dir", target.ca_state_dir, "--out-dir", tmp]
        out = subprocess.run(
            [sys.executable, "-m", "envoykit.cli", *issue],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            return Check("wrong_identity", False, f"envoykit ca issue failed: {out.stderr.strip()}")
        # the server's certificate names a SPIFFE ID, not a DNS name: this client checks no hostname
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(f"{tmp}/cert-chain.pem", f"{tmp}/key.pem")
        outcomes = {}
        for addr in target.backend_inbound:
            with httpx.Client(verify=ctx, timeout=5) as c:
                try:
                    r = c.get(f"https://{addr}/", headers={"host": "backend"})
                    outcomes[addr] = f"{r.status_code} {r.text.strip()[:120]}"
                except httpx.HTTPError as exc:
                    outcomes[addr] = f"error {type(exc).__name__}"
    ok = bool(outcomes) and all(v.startswith("403") for v in outcomes.values())
    seen = sorted(set(outcomes.values()))
    return Check("wrong_identity", ok, f"{len(outcomes)} backend sidecars: " + "; ".join(seen), outcomes)


def mint_token(key: str = "", subject: str = "demo-user") -> str:
    """A JWT from the demo issuer, minted by ``envoykit token`` (a separate process, as a user would).

    Args:
        key: the issuer's private key file (``envoykit token``'s default when empty).

    Raises:
        RuntimeError: the command failed.
    """
    cmd = [sys.executable, "-m", "envoykit.cli", "token", "--sub", subject, *(["--key", key] if key else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"envoykit token failed: {out.stderr.strip()}")
    return out.stdout.strip()


def jwt(target: DemoTarget) -> Check:
    """``/admin`` without a token, with a garbage token, and with a valid one."""
    token = mint_token(target.token_key)
    with _client(target) as c:
        none = c.get("/admin")
        bad = c.get("/admin", headers={"authorization": "Bearer not.a.jwt"})
        good = c.get("/admin", headers={"authorization": f"Bearer {token}"})
    ok = none.status_code in (401, 403) and bad.status_code in (401, 403) and good.status_code == 200
    return Check(
        "jwt",
        ok,
        f"/admin without token: {none.status_code} {_reason(none)}; bad token: {bad.status_code}; "
        f"with token: {good.status_code}",
        {
            "without": none.status_code,
            "bad": bad.status_code,
            "with": good.status_code,
            "reason": _reason(none),
        },
    )


def _reason(r: httpx.Response) -> str:
    text = r.text.strip().replace("\n", " ")
    return text[:80]


def rate_limit(target: DemoTarget, extra: int = 5) -> Check:
    """One fresh client id sends ``2 * limit + extra`` requests; the ones past the limit get 429.

    The window is fixed (epoch-aligned) and may roll over during the burst, so up to twice the limit
    may pass: the check asks for at least ``extra`` 429s and no more than ``2 * limit`` passes.
    """
    limit = target.ratelimit_per_client
    client = f"demo-{uuid.uuid4().hex[:8]}"
    codes: Counter[int] = Counter()
    sent = 2 * limit + extra
    with _client(target) as c:
        for _ in range(sent):
            codes[c.get("/", headers={CLIENT_HEADER: client}).status_code] += 1
    ok = limit > 0 and codes[429] >= extra and codes[200] <= 2 * limit and codes[200] + codes[429] == sent
    return Check(
        "rate_limit",
        ok,
        f"client {client}: {codes[200]} passed, {codes[429]} got 429 (limit {limit}/window)",
        {"passed": codes[200], "limited": codes[429], "limit": limit, "codes": dict(codes)},
    )


def canary(target: DemoTarget, n: int = 200, tolerance_pct: float = 8.0) -> Check:
    """``n`` requests; the share of each backend version against its weight (± ``tolerance_pct``)."""
    versions: Counter[str] = Counter()
    with _client(target) as c:
        for i in range(n):
            r = c.get("/", headers={CLIENT_HEADER: f"canary-{i}"})
            versions[r.headers.get("x-backend-version", f"status {r.status_code}")] += 1
    shares = {v: 100.0 * versions[v] / n for v in sorted(versions)}
    ok = bool(target.canary_weights) and all(
        abs(shares.get(v, 0.0) - w) <= tolerance_pct for v, w in target.canary_weights.items()
    )
    measured = ", ".join(f"{v} {s:.1f}%" for v, s in shares.items())
    wanted = ", ".join(f"{v} {w}%" for v, w in target.canary_weights.items())
    return Check("canary", ok, f"{n} requests: {measured} (weights {wanted})", {"shares": shares, "n": n})


def wasm(target: DemoTarget) -> Check:
    """The response header the Wasm filter adds."""
    with _client(target) as c:
        r = c.get("/", headers={CLIENT_HEADER: f"wasm-{uuid.uuid4().hex[:8]}"})
    value = r.headers.get(target.wasm_header) if target.wasm_header else None
    return Check(
        "wasm",
        value is not None,
        f"{target.wasm_header or '(no wasm filter)'}: {value}",
        {"header": target.wasm_header, "value": value},
    )


def egress_refused(target: DemoTarget) -> Check:
    """A host outside the egress gateway's allow-list is refused (REGISTRY_ONLY); nothing leaves."""
    if not target.egress:
        return Check("egress_refused", False, "the mesh has no egress gateway")
    host = "not-allowed.example.org"
    r = httpx.get(f"http://{target.egress}/", headers={"host": host}, timeout=10)
    return Check(
        "egress_refused",
        r.status_code == 403,
        f"{host} through egress: {r.status_code} {_reason(r)}",
        {"status": r.status_code},
    )


def telemetry(target: DemoTarget) -> Check:
    """Requests and p50/p90/p99 latency per destination service, as the telemetry server counted them
    (``reporter="destination"``: each request once, as the receiving sidecar saw it)."""
    try:
        samples = pm.scrape(target.telemetry_metrics)
    except OSError as exc:
        return Check("telemetry", False, f"cannot read {target.telemetry_metrics}: {exc}")
    counts = pm.sum_by(
        samples, "istio_requests_total", ("destination_service_name", "response_code"), reporter="destination"
    )
    per_service: dict[str, dict[str, Any]] = {}
    for (svc, code), n in sorted(counts.items()):
        entry = per_service.setdefault(svc, {"requests": 0, "codes": {}})
        entry["requests"] += int(n)
        entry["codes"][code] = int(n)
    for svc, entry in per_service.items():
        for q in (0.5, 0.9, 0.99):
            v = pm.quantile(
                samples,
                "istio_request_duration_milliseconds",
                q,
                destination_service_name=svc,
                reporter="destination",
            )
            entry[f"p{int(q * 100)}_ms"] = None if math.isnan(v) else round(v, 2)
    return Check(
        "telemetry",
        bool(per_service),
        "; ".join(f"{s}: {e['requests']} requests" for s, e in per_service.items()) or "no requests counted",
        per_service,
    )


def decisions(target: DemoTarget) -> Check:
    """What the authz and rate-limit servers decided, by rule, from their own ``/metrics``; with the
    native gate, what Envoy decided too (``envoykit_authz_native_decisions_total``, from the telemetry
    server's)."""
    try:
        authz = pm.scrape(target.authz_metrics)
        limits = pm.scrape(target.ratelimit_metrics)
    except (OSError, ValueError) as exc:
        return Check("decisions", False, f"cannot read the servers' metrics: {exc}")
    by_rule = pm.sum_by(authz, "envoykit_authz_decisions_total", ("result", "rule"))
    rules = {f"{result} by {rule}": int(n) for (result, rule), n in sorted(by_rule.items()) if n}
    try:  # with the native gate, Envoy decided the rest (read by the telemetry server)
        native = pm.sum_by(
            pm.scrape(target.telemetry_metrics), "envoykit_authz_native_decisions_total", ("result",)
        )
    except (OSError, ValueError):
        native = {}
    rules.update({f"{result} by Envoy's native gate": int(n) for (result,), n in sorted(native.items()) if n})
    hits = pm.sum_by(limits, "envoykit_ratelimit_hits_total", ("key",))
    over = pm.sum_by(limits, "envoykit_ratelimit_over_limit_total", ("key",))
    keys = {
        key: {"hits": int(n), "over_limit": int(over.get((key,), 0))}
        for (key,), n in sorted(hits.items())
        if n
    }
    denied = sum(n for k, n in rules.items() if k.startswith("deny"))
    allowed = sum(n for k, n in rules.items() if k.startswith("allow"))
    limited = sum(v["over_limit"] for v in keys.values())
    return Check(
        "decisions",
        denied > 0 and allowed > 0 and limited > 0,
        f"authz: {allowed} allowed, {denied} denied; ratelimit: "
        + ", ".join(f"{k} {v['hits']} hits, {v['over_limit']} over limit" for k, v in keys.items()),
        {"authz": rules, "ratelimit": keys},
    )


def wait_for_ingress(target: DemoTarget, timeout_s: float = 30.0) -> None:
    """Block until the ingress accepts TCP connections.

    Raises:
        TimeoutError: it did not within ``timeout_s`` seconds.
    """
    url = httpx.URL(target.ingress)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((url.host, url.port or 80), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingress {target.ingress} not reachable after {timeout_s}s") from None
            time.sleep(0.2)


SCENARIOS = (
    mesh_path,
    outside_refused,
    wrong_identity,
    jwt,
    rate_limit,
    canary,
    wasm,
    egress_refused,
    telemetry,
    decisions,
)


def run_demo(target: DemoTarget) -> list[Check]:
    """Run every scenario in order (telemetry and decisions last: they count what the others sent)."""
    wait_for_ingress(target)
    return [scenario(target) for scenario in SCENARIOS]
