"""Changes of mesh.yaml reaching running Envoys: live edits, refused edits, NACKs, control-plane restarts,
and the egress allow-list."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from envoykit.control.xds.ads import PUSHES
from tests.control.apps import Echo, TlsEcho, self_signed
from tests.control.meshkit import addr, control_plane, get, start_nodes, wait_until, workload, write_mesh
from tests.control.test_traffic_envoy import gateway_mesh, to

pytestmark = pytest.mark.envoy


class Hammer:
    """Sends requests to ``url`` in a loop on a thread and records every status and upstream."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as c:
            while not self._stop.is_set():
                try:
                    r = c.get(self.url)
                    self.results.append((r.status_code, r.headers.get("x-upstream", "")))
                except httpx.HTTPError as exc:
                    self.results.append((0, type(exc).__name__))

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def last(self, n: int = 5) -> list[str]:
        return [u for _, u in self.results[-n:]]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_edit_takes_effect_live_without_a_failed_request(envoy: Any, tmp_path: Path, delta: bool) -> None:
    """Switching the route from subset v1 to v2 adds cluster v2 and removes cluster v1: make before break."""
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)], [{"route": [to(subset="v1")]}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            (proc,) = start_nodes(envoy, cpt, "ingress~ingress", delta=delta)
            url = f"http://{mesh['gateways'][0]['address']}/live"
            with Hammer(url) as h:
                wait_until(lambda: len(h.results) > 20)
                mesh["virtual_services"][0]["http"] = [{"route": [to(subset="v2")]}]
                write_mesh(path, mesh)  # the file watcher picks it up
                wait_until(lambda: h.last() == ["v2"] * 5, timeout=30)
                wait_until(
                    lambda: "outbound|80|v1|backend.default" not in proc.admin("/clusters"), timeout=30
                )
                n = len(h.results)
                wait_until(lambda: len(h.results) > n + 20)
            codes = Counter(code for code, _ in h.results)
            assert codes == {200: len(h.results)}, codes
            assert cpt.cp.config.generation == 1


def test_bad_edit_is_refused_and_traffic_unaffected(envoy: Any, tmp_path: Path) -> None:
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)], [{"route": [to(subset="v1")]}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(envoy, cpt, "ingress~ingress")
            url = f"http://{mesh['gateways'][0]['address']}/x"
            mesh["virtual_services"][0]["http"] = [
                {"route": [to(subset="v1", weight=50), to(subset="v2", weight=45)]}
            ]
            write_mesh(path, mesh)
            assert cpt.reload() is False
            err = cpt.cp.config.last_error or ""
            assert (
                "mesh.yaml:" in err
                and "virtual_services.0.http.0.route" in err
                and "weights sum to 95" in err
            )
            assert cpt.cp.status()["last_error"] == err
            for _ in range(20):
                r = get(url)
                assert r.status_code == 200 and r.headers["x-upstream"] == "v1"
            assert cpt.cp.config.generation == 0


def _pushes(kind: str) -> float:
    return float(PUSHES.labels(kind)._value.get())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_nack_is_reported_and_not_resent(envoy: Any, tmp_path: Path, delta: bool) -> None:
    """A regex Python accepts but Envoy's RE2 refuses passes layers 1-2; with layer 3 off the push is
    NACKed: recorded with node, type and Envoy's message, not resent, and the old routes keep serving."""
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)], [{"route": [to(subset="v1")]}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path, envoy_validate=False) as cpt:
            start_nodes(envoy, cpt, "ingress~ingress", delta=delta)
            url = f"http://{mesh['gateways'][0]['address']}/x"
            mesh["virtual_services"][0]["http"] = [
                {"match": [{"uri": {"regex": "/(?<=a)b"}}], "route": [to(subset="v2")]},
                {"route": [to(subset="v2")]},
            ]
            write_mesh(path, mesh)
            assert cpt.reload() is True
            wait_until(lambda: bool(cpt.cp.status()["nacks"]))
            (nack,) = cpt.cp.status()["nacks"]
            assert nack["node"] == "ingress~ingress" and nack["type"] == "RDS"
            assert "invalid perl operator" in nack["message"]  # RE2 has no lookbehind
            before = _pushes("RDS")
            threading.Event().wait(2.0)
            assert _pushes("RDS") == before  # the bad version is not sent again
            assert get(url).headers["x-upstream"] == "v1"  # Envoy keeps the last version it accepted
            # a fixed file is accepted and clears the NACK
            mesh["virtual_services"][0]["http"] = [{"route": [to(subset="v2")]}]
            write_mesh(path, mesh)
            assert cpt.reload() is True
            wait_until(lambda: get(url).headers["x-upstream"] == "v2")
            wait_until(lambda: cpt.cp.status()["nacks"] == [])


def test_layer3_refuses_what_envoy_would_nack(tmp_path: Path) -> None:
    from envoykit.control.model.loader import load_mesh
    from envoykit.control.translate.translation import translate
    from envoykit.control.translate.validate import validate_translation
    from envoykit.core.errors import ConfigError

    mesh = gateway_mesh(
        [("backend-v1", "v1", 9)], [{"match": [{"uri": {"regex": "/(?<=a)b"}}], "route": [to()]}]
    )
    path = write_mesh(tmp_path / "mesh.yaml", mesh)
    loaded = load_mesh(path)
    with pytest.raises(ConfigError, match="envoy --mode validate refused node ingress~ingress"):
        validate_translation(translate(loaded.mesh, loaded.base_dir), str(path))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_control_plane_restart_envoys_keep_serving_and_resync(
    envoy: Any, tmp_path: Path, delta: bool
) -> None:
    from envoykit.core.net import free_port

    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)], [{"route": [to(subset="v1")]}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        xds = f"127.0.0.1:{free_port()}"
        url = f"http://{mesh['gateways'][0]['address']}/x"
        with control_plane(path, address=xds) as cpt:
            start_nodes(envoy, cpt, "ingress~ingress", delta=delta)
            assert get(url).headers["x-upstream"] == "v1"
        # control plane gone: Envoy keeps its config
        for _ in range(10):
            r = get(url)
            assert r.status_code == 200 and r.headers["x-upstream"] == "v1"
        mesh["virtual_services"][0]["http"] = [{"route": [to(subset="v2")]}]
        write_mesh(path, mesh)
        with control_plane(path, address=xds) as cpt2:
            # while the restarted control plane resyncs, an answer may briefly come from Envoy itself
            wait_until(lambda: get(url).headers.get("x-upstream") == "v2", timeout=45)
            wait_until(
                lambda: {s["node"] for s in cpt2.cp.status()["streams"]} == {"ingress~ingress"}, timeout=15
            )


def egress_mesh(app_port: int, allow: list[dict[str, Any]], mtls: str = "DISABLE") -> dict[str, Any]:
    """A frontend workload (no mTLS) and an egress gateway letting ``allow`` through."""
    return {
        "services": [
            {"name": "frontend", "mtls": "DISABLE", "workloads": [workload("frontend-v1", "v1", app_port)]}
        ],
        "gateways": [
            {
                "name": "egress",
                "kind": "egress",
                "address": addr(),
                "admin": addr(),
                "allow": allow,
                "mtls": mtls,
            }
        ],
    }


@pytest.mark.parametrize("mtls", ["DISABLE", "STRICT"])
def test_egress_allows_listed_hosts_only(envoy: Any, tmp_path: Path, mtls: str) -> None:
    with Echo("frontend") as app, Echo("external") as external:
        allow = [{"host": "api.partner.test", "port": 80, "address": f"127.0.0.1:{external.port}"}]
        mesh = egress_mesh(app.port, allow, mtls=mtls)
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(envoy, cpt, "egress~egress", "sidecar~frontend-v1")
            out = mesh["services"][0]["workloads"][0]["sidecar"]["outbound"]
            r = get(f"http://{out}/v1/data", host="api.partner.test")
            assert r.status_code == 200 and r.headers["x-upstream"] == "external"
            assert r.json()["headers"]["host"] == "api.partner.test"
            assert get(f"http://{out}/", host="evil.test").status_code == 502  # not in the registry
            egress = mesh["gateways"][0]["address"]
            if mtls == "STRICT":  # only mesh identities reach the egress gateway
                with pytest.raises(httpx.HTTPError):
                    get(f"http://{egress}/", host="api.partner.test")
            else:
                r = get(f"http://{egress}/", host="evil.test")
                assert r.status_code == 403 and "not allowed" in r.text
            assert len(external.requests) == 1


def test_egress_originates_tls_and_verifies_the_external_host(envoy: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "api.partner.test")
    with Echo("frontend") as app, TlsEcho("partner", cert, key) as partner:
        target = f"127.0.0.1:{partner.port}"
        tls_to = {"port": 443, "address": target, "tls": True, "ca_file": str(cert)}
        # the second host is the same server, whose certificate does not name it: refused by Envoy
        mesh = egress_mesh(
            app.port, [{"host": "api.partner.test", **tls_to}, {"host": "impostor.test", **tls_to}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(envoy, cpt, "egress~egress", "sidecar~frontend-v1")
            out = mesh["services"][0]["workloads"][0]["sidecar"]["outbound"]
            r = get(f"http://{out}/orders", host="api.partner.test")
            assert r.status_code == 200 and r.headers["x-upstream"] == "partner"
            assert r.json()["headers"]["host"] == "api.partner.test"
            assert get(f"http://{out}/orders", host="impostor.test").status_code == 503
            assert len(partner.requests) == 1
