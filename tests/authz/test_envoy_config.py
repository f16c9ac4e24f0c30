"""envoy/authz.yaml is valid for the real Envoy and works as shipped (ports moved to free ones)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from envoykit.core import free_port, validate_envoy_config

CONFIG = Path(__file__).resolve().parents[2] / "envoy" / "authz.yaml"


def test_validates() -> None:
    validate_envoy_config(CONFIG)


def test_works_as_shipped(tmp_path: Path, envoy, echo, authz_server) -> None:
    pol = tmp_path / "policy"
    pol.mkdir()
    (pol / "r.py").write_text(
        "from envoykit.authz import *\n"
        "@allow_rule()\n"
        "def ctx(req): return req.context_extensions.get('route') == 'default' and req.body == b'hi'\n"
    )
    srv = authz_server(pol)
    cfg = yaml.safe_load(CONFIG.read_text())
    port = free_port()
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    ports = {"app": echo.port, "envoykit_authz": srv.port}
    for c in cfg["static_resources"]["clusters"]:
        ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ep["address"]["socket_address"]["port_value"] = ports[c["name"]]
    envoy(cfg)
    base = f"http://127.0.0.1:{port}"
    assert httpx.post(base + "/x", content=b"hi").status_code == 200  # body and context extension seen
    assert httpx.post(base + "/x", content=b"no").status_code == 403
    srv.stop()
    assert httpx.get(base + "/healthz").status_code == 200  # per-route disabled: no authz call
    assert httpx.post(base + "/x", content=b"hi").status_code == 403  # fail closed
