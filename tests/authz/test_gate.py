"""The native gate decides exactly as the all-Python path, and only what no Python rule can touch.

One Envoy, two listeners with the same routes and one authz server: ``gate`` runs the compiled gate
(RBAC) before ext_authz, ``python`` only ext_authz. Every case goes to both and must get the same
status and body; each case also says who should decide it on the gate listener, which the second
half checks with the server stopped (what needs Python fails closed, the rest follows RBAC).
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from envoykit.authz import load_policy
from envoykit.authz.gate import NoGate, compile_gate, gate_document
from envoykit.authz.istio import Workload
from envoykit.core import free_port, validate_envoy_config
from envoykit.core.authzgate import Gate, assemble, parse_document, read_document
from tests.authz.conftest import ext_authz_filter
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener

POLICY_YAML = """
kind: AuthorizationPolicy
metadata: {name: public-read}
spec:
  action: ALLOW
  rules:
    - to: [{operation: {methods: [GET, HEAD], paths: ["/public/*", "/api/*"]}}]
    - to: [{operation: {paths: ["/admin/*", "/orders*"]}}]
    - from: [{source: {ipBlocks: [127.0.0.1/32]}}]
      to: [{operation: {paths: ["/local/*"]}}]
    - to: [{operation: {paths: ["/canary*"]}}]
      when: [{key: "request.headers[x-canary]", values: ["yes"]}]
---
kind: AuthorizationPolicy
metadata: {name: no-debug}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/public/debug*", "/admin/debug*"]}}]
---
kind: AuthorizationPolicy
metadata: {name: shadow-all}
spec:
  action: DENY
  dryRun: true
  rules: [{}]
"""

RULES_PY = """
from envoykit.authz import allow, allow_rule, deny, deny_rule

@deny_rule(paths=["/admin/*"])
def admin_needs_header(req):
    if req.headers.get("x-admin") != "yes":
        return deny(401, "admin header missing")

@allow_rule(methods=["POST"], paths=["/orders", "/orders/*"])
def orders(req):
    return allow(headers={"x-order": "checked"}) if req.headers.get("x-customer") else False
"""

API_KEY = "secret-key"
AUTHN = f"api_keys:\n  header: x-api-key\n  keys: [{{name: ci, sha256: {hashlib.sha256(API_KEY.encode()).hexdigest()}}}]\n"

NATIVE, PYTHON = "native", "python"
CASES: list[tuple[str, str, dict[str, str], str]] = [
    # (method, path, headers, who decides on the gate listener)
    ("GET", "/public/a", {}, NATIVE),
    ("HEAD", "/public/a", {}, NATIVE),
    ("DELETE", "/public/a", {}, NATIVE),
    ("GET", "/public/debug/vars", {}, NATIVE),
    ("GET", "/public/a;jsessionid=1", {}, NATIVE),
    ("GET", "/public/x%3Bp", {}, NATIVE),  # ambiguous: denied first, by both
    ("GET", "/public/.;x/a", {}, NATIVE),
    ("GET", "/api/items", {}, NATIVE),
    ("POST", "/api/items", {}, NATIVE),
    ("GET", "/local/x", {}, NATIVE),
    ("GET", "/canary/v2", {"x-canary": "yes"}, NATIVE),
    ("GET", "/canary/v2", {"x-canary": "no"}, NATIVE),
    ("GET", "/nothing", {}, NATIVE),
    ("PUT", "/orders", {}, NATIVE),  # the Python rule is POST only
    ("GET", "/admin/x", {}, PYTHON),
    ("GET", "/admin/x", {"x-admin": "yes"}, PYTHON),
    ("GET", "/admin/debug/x", {"x-admin": "yes"}, PYTHON),
    ("GET", "/admin;p/x", {}, PYTHON),  # the server cuts ';p' and the rule applies
    ("GET", "/public/%2e%2e/admin/x", {}, PYTHON),  # normalised to /admin/x before both
    ("GET", "/admin%2Fx", {}, PYTHON),
    ("GET", "/%61dmin/x", {}, PYTHON),  # an escaped unreserved character, decoded by both
    ("GET", "//admin//x", {}, PYTHON),
    ("GET", "/admin/./x;v=2", {}, PYTHON),
    ("GET", "/public/b;x/../../admin/y", {}, PYTHON),
    ("GET", "/ADMIN/x", {}, PYTHON),  # over-match (methods/paths compare case-insensitively): same answer
    ("POST", "/orders", {"x-customer": "c1"}, PYTHON),
    ("POST", "/orders", {}, PYTHON),
    ("POST", "/orders/7;v=1", {}, PYTHON),
    ("GET", "/public/..;/admin/x", {}, PYTHON),  # Envoy resolves '..;' as '..': /admin/x
    ("GET", "/public/a", {"x-api-key": API_KEY}, PYTHON),
    ("GET", "/public/a", {"x-api-key": "wrong"}, PYTHON),  # 401 only the server gives
]

HCM = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
}


def _policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policy"
    d.mkdir()
    (d / "policy.yaml").write_text(POLICY_YAML)
    (d / "rules.py").write_text(RULES_PY)
    (d / "authn.yaml").write_text(AUTHN)
    return d


def _send(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    # http.client sends the target as written (httpx would resolve dot segments itself)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers={"host": "svc", **headers})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _dicts(messages: Any) -> list[dict[str, Any]]:
    return [MessageToDict(m, preserving_proto_field_name=True) for m in messages]


def _gate_and_python(envoy: Any, gate: Any, authz_port: int) -> tuple[Any, int, int]:
    """One Envoy with two listeners on the same routes: the gate before ext_authz, and ext_authz
    alone; returns the Envoy and the two ports."""
    with_gate, python_only = free_port(), free_port()
    routes = [direct_response(200, "ok")]
    enabled = MessageToDict(gate.ext_authz_enabled, preserving_proto_field_name=True)
    cfg = bootstrap(
        [
            http_listener(
                with_gate,
                routes,
                [*_dicts(gate.filters), ext_authz_filter(filter_enabled_metadata=enabled)],
                name="gate",
                hcm_extra=HCM,
            ),
            http_listener(python_only, routes, [ext_authz_filter()], name="python", hcm_extra=HCM),
        ],
        [cluster("authz", authz_port, http2=True)],
    )
    validate_envoy_config(cfg)
    return envoy(cfg), with_gate, python_only


def _published(pol_dir: Path, views: list[Workload] | None = None) -> Gate:
    """The gate as the control plane gets it: the server's published document (JSON), read back and
    assembled; the same filters as compiling in process."""
    doc = gate_document(load_policy(pol_dir))
    gate = assemble(parse_document(doc.model_dump_json(indent=1), "published"), views or [Workload()])
    direct = compile_gate(load_policy(pol_dir), views or [Workload()])
    assert [f.SerializeToString(deterministic=True) for f in gate.filters] == [
        f.SerializeToString(deterministic=True) for f in direct.filters
    ]
    return gate


def test_gate_decides_like_python_and_fails_closed(tmp_path: Path, envoy, authz_server) -> None:
    pol_dir = _policy_dir(tmp_path)
    gate = _published(pol_dir)
    assert gate.python_rules == ("admin_needs_header", "orders") and gate.credentials == ("x-api-key",)
    srv = authz_server(pol_dir)
    proxy, with_gate, python_only = _gate_and_python(envoy, gate, srv.port)
    both = [(case, _send(with_gate, *case[:3]), _send(python_only, *case[:3])) for case in CASES]
    differ = [(c, g, p) for c, g, p in both if g != p]
    assert not differ, f"the gate and the Python path disagree: {differ}"
    statuses = {(*c[:2], tuple(c[2].items())): g[0] for c, g, _ in both}
    # every kind of outcome is covered: native allow and deny, Python allow, deny and 401
    assert statuses[("GET", "/public/a", ())] == 200
    assert statuses[("GET", "/public/debug/vars", ())] == 403
    assert statuses[("GET", "/nothing", ())] == 403
    assert statuses[("GET", "/admin/x", ())] == 401
    assert statuses[("GET", "/admin;p/x", ())] == 401
    assert statuses[("GET", "/admin/x", (("x-admin", "yes"),))] == 200
    assert statuses[("GET", "/public/a", (("x-api-key", "wrong"),))] == 401
    python_cases = sum(1 for c in CASES if c[3] == PYTHON)
    stats = proxy.stats("http.gate.")
    checks = stats.get("http.gate.ext_authz.ok", 0) + stats.get("http.gate.ext_authz.denied", 0)
    assert checks == python_cases, stats
    # the gate's own counters say the same (Envoy puts a '.' after the shadow stat prefix)
    assert stats["http.gate.rbac.envoykit_gate_.shadow_allowed"] == python_cases, stats
    native = stats["http.gate.ext_authz.disabled"] + stats["http.gate.rbac.envoykit_gate_allow_.denied"]
    assert native + stats["http.gate.rbac.envoykit_gate_deny_.denied"] == len(CASES) - python_cases

    srv.stop()  # what needs Python now fails closed; what the gate decides does not change
    for (method, path, headers, who), (status, body), _ in both:
        got = _send(with_gate, method, path, headers)
        if who == PYTHON:
            assert got[0] == 403, (method, path, headers, got)
        else:
            assert got == (status, body), (method, path, headers, got)


def _wait_for(what: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _differential(envoy: Any, gate: Gate, authz_port: int) -> int:
    """Every case through the gate and through the all-Python path: identical; the calls the gate made."""
    proxy, with_gate, python_only = _gate_and_python(envoy, gate, authz_port)
    both = [(case, _send(with_gate, *case[:3]), _send(python_only, *case[:3])) for case in CASES]
    differ = [(c, g, p) for c, g, p in both if g != p]
    assert not differ, f"the gate and the Python path disagree: {differ}"
    stats = proxy.stats("http.gate.")
    return int(stats.get("http.gate.ext_authz.ok", 0) + stats.get("http.gate.ext_authz.denied", 0))


RELOADED_RULE = """
from envoykit.authz import deny, deny_rule

@deny_rule(methods=["POST"], paths=["/api/*"])
def api_writes_need_a_token(req):
    return deny(401, "token missing") if not req.headers.get("x-token") else None
"""


def test_published_gate_follows_the_servers_reloads(tmp_path: Path, envoy, authz_server) -> None:
    """The server's --gate-file, after each reload it accepts, decides like the all-Python path of the
    policy the server then serves; a reload it refuses leaves the document as it was."""
    pol_dir = _policy_dir(tmp_path)
    gate_file = tmp_path / "gate.json"
    srv = authz_server(pol_dir, "--gate-file", str(gate_file), "--settle-ms", "50")
    first = read_document(str(gate_file))
    assert first == gate_document(load_policy(pol_dir))  # the served policy's gate, as compiled offline
    assert _differential(envoy, assemble(first, [Workload()]), srv.port) == sum(c[3] == PYTHON for c in CASES)
    # a new Python rule takes POST /api/* from Envoy, a new YAML DENY takes /public/a: both published
    (pol_dir / "api.py").write_text(RELOADED_RULE)
    (pol_dir / "deny.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: no-a}\nspec:\n  action: DENY\n"
        '  rules: [{to: [{operation: {paths: ["/public/a"]}}]}]\n'
    )
    _wait_for(lambda: (d := read_document(str(gate_file))).digest != first.digest and len(d.policies) == 3)
    second = read_document(str(gate_file))
    assert "api_writes_need_a_token" in second.python_rules
    calls = _differential(envoy, assemble(second, [Workload()]), srv.port)
    assert calls == sum(c[3] == PYTHON for c in CASES) + 1  # POST /api/items now asks the server
    # a refused reload (the server keeps its policy) publishes nothing
    (pol_dir / "broken.yaml").write_text("kind: AuthorizationPolicy\nmetadata: [\n")
    _wait_for(lambda: "broken.yaml" in srv.log_path.read_text())
    time.sleep(0.5)
    assert read_document(str(gate_file)) == second
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/gate", timeout=5) as r:
        assert parse_document(r.read(), "/gate") == second  # the metrics port serves the same document


def test_gate_refuses_what_it_cannot_split(tmp_path: Path) -> None:
    d = _policy_dir(tmp_path)
    (d / "catch_all.py").write_text(
        "from envoykit.authz import allow_rule\n\n@allow_rule()\ndef everything(req):\n    return True\n"
    )
    with pytest.raises(NoGate, match=r"catch_all.py:3: Python rule everything has no hosts/paths/methods"):
        compile_gate(load_policy(d))
    (d / "catch_all.py").unlink()
    (d / "jwt.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: jwt}\nspec:\n  rules:\n"
        "    - from: [{source: {requestPrincipals: ['*']}}]\n"
    )
    with pytest.raises(NoGate, match=r"jwt.yaml:5: .*requestPrincipals.*every YAML policy compilable"):
        compile_gate(load_policy(d))
    (d / "jwt.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: billing-only, namespace: billing}\nspec:\n  action: DENY\n"
        "  rules: [{to: [{operation: {paths: [/x]}}]}]\n"
    )
    # the server knows the namespace over mTLS only: with both views possible, no gate
    with pytest.raises(NoGate, match="namespace or selector"):
        compile_gate(load_policy(d), [Workload("shop"), Workload(None)])
    assert compile_gate(load_policy(d), [Workload("shop")]).filters


@pytest.mark.envoy
def test_compile_gate_command(tmp_path: Path) -> None:
    d = _policy_dir(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "envoykit.cli", "authz", "compile", "--gate", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert [f["name"] for f in doc["http_filters"]] == ["envoykit.gate.deny", "envoykit.gate.allow"]
    assert doc["ext_authz"]["filter_enabled_metadata"]["invert"] is True
    assert "admin_needs_header, orders, header x-api-key" in r.stderr
    routes = [direct_response(200, "ok")]
    authz = ext_authz_filter(filter_enabled_metadata=doc["ext_authz"]["filter_enabled_metadata"])
    listener = http_listener(free_port(), routes, [*doc["http_filters"], authz], hcm_extra=HCM)
    validate_envoy_config(bootstrap([listener], [cluster("authz", free_port(), http2=True)]))
    (d / "catch_all.py").write_text("from envoykit.authz import deny_rule\n@deny_rule()\ndef x(req): ...\n")
    r = subprocess.run(
        [sys.executable, "-m", "envoykit.cli", "authz", "compile", "--gate", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "catch_all.py:2: Python rule x has no hosts/paths/methods" in r.stderr
    # --document: the same as data (what the server publishes); it says why there is no gate
    r = subprocess.run(
        [sys.executable, "-m", "envoykit.cli", "authz", "compile", "--gate", "--document", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    published = parse_document(r.stdout, "stdout")
    assert published.no_gate is not None and "Python rule x has no" in published.no_gate.message


# Python rules beside the Istio differential's policies: they apply to some paths and change nothing,
# so the Istio cases keep their expected statuses while the gate sends those paths to the server.
NOOP_RULES = """
from envoykit.authz import allow_rule, deny_rule

@allow_rule(paths=["/ops/*"])
def ops_extra(req):
    return False

@deny_rule(paths=["/api/legacy/*", "/partner/*"], methods=["GET"])
def never(req):
    return False
"""


def test_gate_with_mtls_identities_and_scope(tmp_path: Path, envoy, authz_server) -> None:
    from tests.authz import test_istio_differential as istio
    from tests.authz.test_rbac_compile import tls
    from tests.certs import TestCA
    from tests.envoycfg import socket_address

    port = free_port()
    pol_dir = tmp_path / "policy"
    pol_dir.mkdir()
    (pol_dir / "policies.yaml").write_text(istio.POLICIES.replace("PORT", str(port)))
    (pol_dir / "rules.py").write_text(NOOP_RULES)
    # a sidecar under STRICT mTLS: the server reads the namespace from the listener's certificate
    gate = _published(pol_dir, [Workload("shop", istio.LABELS)])
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("backend", dns=["localhost"], uris=[istio.BACKEND], server=True)
    srv = authz_server(pol_dir)
    routes = [direct_response(200, "ok")]
    authz = ext_authz_filter(bootstrap_metadata_labels_key="labels")
    enabled = MessageToDict(gate.ext_authz_enabled, preserving_proto_field_name=True)
    gated = [
        *_dicts(gate.filters),
        {**authz, "typed_config": {**authz["typed_config"], "filter_enabled_metadata": enabled}},
    ]
    listeners = []
    for host, filters in (("127.0.0.1", gated), ("127.0.0.2", [authz])):
        lst = http_listener(port, routes, filters, name=host, transport_socket=tls(ca, server), hcm_extra=HCM)
        lst["address"] = socket_address(port, host)
        listeners.append(lst)
    cfg = bootstrap(listeners, [cluster("authz", srv.port, http2=True)])
    cfg["node"] = {"id": "sidecar~backend-v2", "cluster": "backend", "metadata": {"labels": istio.LABELS}}
    proxy = envoy(cfg)
    contexts = {}
    for uri in (None, istio.FRONTEND, istio.OTHER):
        ctx = ssl.create_default_context(cafile=str(ca.path))
        ctx.check_hostname = False  # 127.0.0.2 is not in the certificate; the CA check stays
        if uri is not None:
            pair = ca.issue(uri.rsplit("/", 1)[1], uris=[uri])
            ctx.load_cert_chain(str(pair.cert), str(pair.key))
        contexts[uri] = ctx
    wrong = []
    for ident, method, path, headers, want in istio.CASES:
        got = []
        for host in ("127.0.0.1", "127.0.0.2"):
            conn = http.client.HTTPSConnection(host, port, context=contexts[ident], timeout=5)
            conn.request(method, path, headers={"host": "backend", **headers})
            got.append(conn.getresponse().status)
            conn.close()
        if got != [want, want]:
            wrong.append(((ident, method, path, headers), want, got))
    assert not wrong, f"(case, expected, [gate, python]): {wrong}"
    to_python = sum(1 for c in istio.CASES if c[2].startswith(("/ops/", "/api/legacy/", "/partner/")))
    stats = proxy.stats("http.127.0.0.1.ext_authz.")
    assert stats["http.127.0.0.1.ext_authz.ok"] + stats["http.127.0.0.1.ext_authz.denied"] == to_python
    assert stats["http.127.0.0.1.ext_authz.disabled"] > 0


def test_shipped_example_through_the_gate(envoy, authz_server) -> None:
    """examples/gate with its cases file: the gate and the server agree with each other and with the
    expected decisions, and only /orders reaches the server."""
    root = Path(__file__).resolve().parents[2]
    pol_dir = root / "examples" / "gate"
    gate = compile_gate(load_policy(pol_dir))
    srv = authz_server(pol_dir)
    proxy, with_gate, python_only = _gate_and_python(envoy, gate, srv.port)
    cases = yaml.safe_load((root / "examples" / "gate-cases.yaml").read_text())["cases"]
    for case in cases:
        req, want = case["request"], case["expect"]
        args = (req.get("method", "GET"), req["path"], req.get("headers", {}))
        got = _send(with_gate, *args)
        assert got == _send(python_only, *args), case["name"]
        assert got[0] == (200 if want["result"] == "allow" else want["status"]), (case["name"], got)
    stats = proxy.stats("http.gate.ext_authz.")
    orders = sum(1 for c in cases if c["request"]["path"].startswith("/orders"))
    assert stats["http.gate.ext_authz.ok"] + stats["http.gate.ext_authz.denied"] == orders
