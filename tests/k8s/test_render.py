"""`envoykit k8s render`: every manifest passes Kubernetes' schemas (strict) for the demo mesh and a
generated 200-service mesh; the objects refer to each other consistently (selectors, named ports,
volumes, ServiceAccounts); the in-cluster mesh validates with envoy; the bootstraps load in envoy."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.control.model.loader import load_mesh, parse_mesh
from envoykit.control.translate.mtls import SpiffeMeshTls
from envoykit.control.translate.translation import translate
from envoykit.control.translate.validate import validate_translation
from envoykit.core import envoy_binary
from envoykit.k8s.render import RenderOptions, render_mesh
from tests.k8s.helpers import demo_copy, generated_mesh, schema_errors

Obj = dict[str, Any]


def _all(files: dict[str, list[Obj]]) -> list[Obj]:
    return [o for docs in files.values() for o in docs]


def _pods(objs: list[Obj]) -> list[tuple[str, Obj]]:
    return [(d["metadata"]["namespace"], d["spec"]["template"]) for d in objs if d["kind"] == "Deployment"]


def reference_problems(objs: list[Obj]) -> list[str]:
    """What `kubectl apply` would accept but the cluster could not run: selectors that select nothing,
    named target ports no pod has, volumes of objects not rendered, unknown ServiceAccounts."""
    out: list[str] = []
    have = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs}
    pods = _pods(objs)
    for d in objs:
        if d["kind"] == "Deployment":
            tl = d["spec"]["template"]["metadata"]["labels"]
            if any(tl.get(k) != v for k, v in d["spec"]["selector"]["matchLabels"].items()):
                out.append(f"Deployment {d['metadata']['name']}: selector does not match its template")
    for s in (o for o in objs if o["kind"] == "Service"):
        ns, sel = s["metadata"]["namespace"], s["spec"]["selector"]
        chosen = [
            p
            for pns, p in pods
            if pns == ns and all(p["metadata"]["labels"].get(k) == v for k, v in sel.items())
        ]
        if not chosen:
            out.append(f"Service {ns}/{s['metadata']['name']} selects no pod")
        for port in s["spec"]["ports"]:
            for p in chosen:
                cs = p["spec"]["containers"] + p["spec"].get("initContainers", [])
                if isinstance(port["targetPort"], str) and port["targetPort"] not in {
                    cp["name"] for c in cs for cp in c.get("ports", [])
                }:
                    out.append(f"Service {s['metadata']['name']}: no container port {port['targetPort']}")
    for ns, p in pods:
        spec = p["spec"]
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"] + spec.get("initContainers", []):
            out += [
                f"{c['name']}: no volume {m['name']}"
                for m in c.get("volumeMounts", [])
                if m["name"] not in vols
            ]
        for v in vols.values():
            if "secret" in v and ("Secret", ns, v["secret"]["secretName"]) not in have:
                out.append(f"volume {v['name']}: no Secret {ns}/{v['secret']['secretName']}")
            if "configMap" in v and ("ConfigMap", ns, v["configMap"]["name"]) not in have:
                out.append(f"volume {v['name']}: no ConfigMap {ns}/{v['configMap']['name']}")
        sa = spec.get("serviceAccountName")
        if sa and ("ServiceAccount", ns, sa) not in have:
            out.append(f"no ServiceAccount {ns}/{sa}")
    return out


# the first build of the demo's Wasm module (zig's libc) takes minutes on a cold cache
BUILDS_WASM = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Obj]]]:
    tmp = tmp_path_factory.mktemp("demo")
    mesh = demo_copy(tmp)
    return mesh, render_mesh(mesh, RenderOptions(state_dir=tmp / "state"))


@BUILDS_WASM
def test_demo_mesh_one_file_per_component(demo: tuple[Path, dict[str, list[Obj]]]) -> None:
    _, files = demo
    assert sorted(files) == [
        "00-namespaces.yaml",
        "05-wasm.yaml",
        "10-control-plane.yaml",
        "20-access-log.yaml",
        "20-authz.yaml",
        "20-ratelimit.yaml",
        "25-redis.yaml",
        "30-gateway-egress.yaml",
        "30-gateway-ingress.yaml",
        "40-service-backend.yaml",
        "40-service-frontend.yaml",
    ]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in files["10-control-plane.yaml"]}
    assert {
        ("Deployment", "envoykit-control"),
        ("Service", "envoykit-control"),
        ("Secret", "envoykit-ca"),
        ("Role", "envoykit-discovery"),
        ("RoleBinding", "envoykit-discovery"),
        ("PodDisruptionBudget", "envoykit-control"),
        ("ConfigMap", "envoykit-mesh"),
        ("MutatingWebhookConfiguration", "envoykit-sidecar-injector"),
    } <= kinds


@BUILDS_WASM
def test_demo_mesh_passes_the_schemas_strictly(demo: tuple[Path, dict[str, list[Obj]]]) -> None:
    objs = _all(demo[1])
    assert [e for o in objs for e in schema_errors(o)] == []
    assert reference_problems(objs) == []


@BUILDS_WASM
def test_demo_servers_probes_configmaps_and_redis(demo: tuple[Path, dict[str, list[Obj]]]) -> None:
    _, files = demo
    authz = {o["kind"]: o for o in files["20-authz.yaml"] if o["kind"] != "ConfigMap"}
    c = authz["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"] == {"port": 9191} and c["livenessProbe"]["grpc"] == {"port": 9191}
    assert c["args"][:2] == ["--address", "0.0.0.0:9191"]
    assert c["args"][c["args"].index("--policy-dir") + 1] == "/etc/envoykit/authz/policies"
    policies = next(o for o in files["20-authz.yaml"] if o["kind"] == "ConfigMap")
    assert set(policies["data"]) == {"authn.yaml", "demo-jwks.json", "mesh.py"}
    assert authz["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    rl = next(o for o in files["20-ratelimit.yaml"] if o["kind"] == "Deployment")
    args = rl["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--redis-url") + 1] == "redis://envoykit-redis.default.svc.cluster.local:6379/0"


@pytest.mark.envoy
@BUILDS_WASM
def test_in_cluster_mesh_and_bootstraps_pass_envoy(
    demo: tuple[Path, dict[str, list[Obj]]], tmp_path: Path
) -> None:
    mesh_path, files = demo
    cm = next(o for o in files["10-control-plane.yaml"] if o["kind"] == "ConfigMap")
    # the module is mounted at /etc/envoykit/wasm in pods; here it is where the copy built it
    text = cm["data"]["mesh.yaml"].replace("/etc/envoykit/wasm", str(mesh_path.parent / "wasm"))
    kmesh = parse_mesh(text)
    assert kmesh.extensions.authz.address.host == "envoykit-authz.default.svc.cluster.local"
    egress = kmesh.gateway("egress")
    assert egress is not None
    assert str(egress.address) == "egress.default.svc.cluster.local:8090"
    assert str(kmesh.extensions.access_log.address) == "envoykit-access-log.default.svc.cluster.local:9293"
    (tmp_path / "mesh.yaml").write_text(text)
    loaded = load_mesh(tmp_path / "mesh.yaml")
    t = translate(loaded.mesh, loaded.base_dir, SpiffeMeshTls())
    assert validate_translation(t, "k8s mesh")  # envoy --mode validate, one node per kind
    for name in ("40-service-backend.yaml", "30-gateway-ingress.yaml"):
        secret = next(
            o for o in files[name] if o["kind"] == "Secret" and "bootstrap" in o["metadata"]["name"]
        )
        boot = base64.b64decode(secret["data"]["bootstrap.json"])
        assert json.loads(boot)["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
        (tmp_path / "boot.json").write_bytes(boot)
        r = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "boot.json")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_generated_200_service_mesh_passes_the_schemas(tmp_path: Path) -> None:
    mesh = generated_mesh(tmp_path / "mesh.yaml", 200)
    opts = RenderOptions(
        namespace="envoykit-system",
        state_dir=tmp_path / "state",
        app_images={"*": "shop/app:1.0"},
        control_replicas=3,
    )
    files = render_mesh(mesh, opts)
    objs = _all(files)
    assert len([f for f in files if f.startswith("40-service-")]) == 200
    assert (
        len([o for o in objs if o["kind"] == "Deployment"]) == 220 + 1 + 4 + 1 + 1
    )  # workloads, cp, servers (authz, ratelimit, access log, ext_proc telemetry), redis, ingress
    assert [e for o in objs for e in schema_errors(o)] == []
    assert reference_problems(objs) == []
    roles = {(o["metadata"]["namespace"]) for o in objs if o["kind"] == "Role"}
    assert roles == {"shop"}  # discovery reads where the services are, nothing else
    cp = next(o for o in files["10-control-plane.yaml"] if o["kind"] == "Deployment")
    assert cp["metadata"]["namespace"] == "envoykit-system" and cp["spec"]["replicas"] == 3


@BUILDS_WASM
def test_cli_render_writes_the_folder(tmp_path: Path) -> None:
    mesh = demo_copy(tmp_path)
    out = tmp_path / "k8s"
    r = CliRunner().invoke(
        main,
        [
            "k8s",
            "render",
            str(mesh),
            "-o",
            str(out),
            "--state-dir",
            str(tmp_path / "st"),
            "--image",
            "reg.example/envoykit:1.2",
            "--control-replicas",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    docs = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    cp = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "envoykit-control")
    assert cp["spec"]["replicas"] == 3
    args = cp["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--sidecar-image") + 1] == "reg.example/envoykit:1.2"
    assert {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] != "redis"
    } == {"reg.example/envoykit:1.2"}
    assert "kubectl apply -f" in r.output


def test_render_refuses_an_app_without_image(tmp_path: Path) -> None:
    mesh = generated_mesh(tmp_path / "mesh.yaml", 2)
    r = CliRunner().invoke(
        main, ["k8s", "render", str(mesh), "-o", str(tmp_path / "o"), "--state-dir", str(tmp_path / "s")]
    )
    assert r.exit_code != 0 and "no image for service 'svc-0000'" in r.output
    assert not (tmp_path / "o").exists()


@BUILDS_WASM
def test_the_gate_is_read_from_the_authz_service(tmp_path: Path) -> None:
    """In a cluster the control plane's pod has no policy directory: it reads the gate document the
    authz servers publish on their metrics port, through the authz Service."""
    mesh_path = demo_copy(tmp_path)
    text = mesh_path.read_text()
    old = "  authz: {address: 127.0.0.1:9191, timeout: 500ms}"
    assert old in text
    mesh_path.write_text(text.replace(old, old[:-1] + ", gate: authz-gate.json}"))
    files = render_mesh(mesh_path, RenderOptions(state_dir=tmp_path / "state"))
    cm = next(o for o in files["10-control-plane.yaml"] if o["kind"] == "ConfigMap")
    kmesh = parse_mesh(cm["data"]["mesh.yaml"].replace("/etc/envoykit/wasm", str(mesh_path.parent / "wasm")))
    assert kmesh.extensions.authz.gate == "http://envoykit-authz.default.svc.cluster.local:9101/gate"
    svc = next(o for o in files["20-authz.yaml"] if o["kind"] == "Service")
    assert {
        "name": "metrics",
        "port": 9101,
        "targetPort": "metrics",
        "protocol": "TCP",
        "appProtocol": "http",
    } in (svc["spec"]["ports"])
    assert not reference_problems(_all(files))
