"""envoy/authz.yaml is valid for the real Envoy and works as shipped (ports moved to free ones)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from envoykit.core import validate_envoy_config
from tests.envoycfg import shipped

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "envoy" / "authz.yaml"


def _first_answer(send: Callable[[], httpx.Response], want: int = 200) -> httpx.Response:
    """The first answer that is ``want``, within 10 s: under load the first Check (new HTTP/2
    connection, 250 ms budget of envoy/authz.yaml) can time out and fail closed (403)."""
    deadline = time.monotonic() + 10
    r = send()
    while r.status_code != want and time.monotonic() < deadline:
        time.sleep(0.2)
        r = send()
    return r


@pytest.mark.envoy
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
    cfg, port = shipped(CONFIG, {"app": echo.port, "envoykit_authz": srv.port})
    envoy(cfg)
    base = f"http://127.0.0.1:{port}"
    ok = _first_answer(lambda: httpx.post(base + "/x", content=b"hi"))
    assert ok.status_code == 200  # body and context extension seen
    assert httpx.post(base + "/x", content=b"no").status_code == 403
    srv.stop()
    assert httpx.get(base + "/healthz").status_code == 200  # per-route disabled: no authz call
    assert httpx.post(base + "/x", content=b"hi").status_code == 403  # fail closed


def test_pair_with_examples_policies_closes_admin(envoy, echo, authz_server) -> None:
    """The pair the header names: envoy/authz.yaml + examples/policies, both as shipped."""
    srv = authz_server(REPO / "examples" / "policies")
    cfg, port = shipped(CONFIG, {"app": echo.port, "envoykit_authz": srv.port})
    envoy(cfg)
    base = f"http://127.0.0.1:{port}"
    home = _first_answer(lambda: httpx.get(base + "/"))
    assert home.status_code == 200
    assert home.json()["headers"]["x-envoykit-principal"] == "none"  # the policy's allow rule ran
    admin = httpx.get(base + "/admin")
    assert admin.status_code == 401 and "needs a token" in admin.text
    assert httpx.get(base + "/admin/users").status_code == 401
    tok = subprocess.run(
        [sys.executable, "-m", "envoykit.cli", "token"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    ).stdout.strip()
    ok = httpx.get(base + "/admin", headers={"authorization": f"Bearer {tok}"})
    assert ok.status_code == 200 and ok.json()["headers"]["x-envoykit-user"] == "demo-user"
    bad = httpx.get(base + "/admin", headers={"authorization": f"Bearer {tok[:-4]}AAAA"})
    assert bad.status_code in (401, 403)
