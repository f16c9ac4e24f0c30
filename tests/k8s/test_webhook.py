"""The injection webhook, served by `envoykit control serve --webhook` as a process: real HTTPS
requests carrying AdmissionReview JSON, the server's certificate checked against the mesh CA and the
Service's DNS name; exact JSONPatch answers; the patched pods pass the Pod schema."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from envoykit.control.model.loader import load_mesh
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.core.net import FreePorts
from envoykit.k8s.kmesh import k8s_mesh
from tests.k8s.helpers import REPO, schema_errors

DNS = "envoykit-control.default.svc"
STATUS = '{"workload": "backend-v1", "node": "sidecar~backend-v1", "mesh": "envoykit"}'


def sidecar(port: int) -> dict[str, Any]:
    """The sidecar container as the webhook must inject it, written out in full."""
    return {
        "name": "envoykit-proxy",
        "image": "reg.example/envoykit:9",
        "imagePullPolicy": "IfNotPresent",
        "command": ["envoy"],
        "args": [
            "-c",
            "/etc/envoykit/bootstrap/bootstrap.json",
            "--disable-hot-restart",
            "--log-level",
            "info",
        ],
        "ports": [{"name": "mesh", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "runAsUser": 1337,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "envoykit-bootstrap", "mountPath": "/etc/envoykit/bootstrap", "readOnly": True}
        ],
        "restartPolicy": "Always",
    }


BOOT_VOLUME = {
    "name": "envoykit-bootstrap",
    "secret": {"secretName": "envoykit-bootstrap-backend-v1", "defaultMode": 292},
}


class _To127(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 while checking the certificate for ``host`` (the Service's DNS name)."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class Webhook:
    def __init__(self, port: int, ca_file: Path) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(ca_file))

    def post(self, body: Any, path: str = "/inject") -> tuple[int, Any]:
        conn = _To127(DNS, self.port, context=self.ctx, timeout=10)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        out = json.loads(r.read())
        conn.close()
        return r.status, out

    def review(self, pod: dict[str, Any], uid: str = "6f1c-1") -> dict[str, Any]:
        status, body = self.post(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": uid,
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "default",
                    "operation": "CREATE",
                    "object": pod,
                },
            }
        )
        assert (
            status == 200
            and body["apiVersion"] == "admission.k8s.io/v1"
            and body["kind"] == "AdmissionReview"
        )
        assert body["response"]["uid"] == uid
        return dict(body["response"])


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("webhook")
    mesh = load_mesh(REPO / "examples" / "mesh.yaml").mesh
    kmesh = k8s_mesh(mesh, "default").model_copy(
        update={"extensions": mesh.extensions.model_copy(update={"wasm": []})}
    )
    path = tmp / "mesh.yaml"
    # the in-cluster mesh as the envoykit-mesh ConfigMap holds it (Wasm left out: no module here)
    doc = kmesh.model_dump(mode="json", exclude_defaults=True)
    for g in doc.get("gateways", []):
        g.get("extensions", {}).pop("wasm", None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ports = FreePorts()
    hook_port, xds_port = ports.take(), ports.take()
    state = tmp / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "envoykit.cli",
            "control",
            "serve",
            str(path),
            "--address",
            f"127.0.0.1:{xds_port}",
            "--state-dir",
            str(state),
            "--no-envoy-validate",
            "--webhook",
            f"127.0.0.1:{hook_port}",
            "--webhook-dns",
            DNS,
            "--sidecar-image",
            "reg.example/envoykit:9",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "cp.log", "w"),  # noqa: SIM115 (kept open for the process)
    )
    try:
        deadline = time.monotonic() + 60
        while not (state / "ca" / "state.json").exists() or not _listening(hook_port):
            assert proc.poll() is None, (tmp / "cp.log").read_text()
            assert time.monotonic() < deadline, "webhook did not start"
            time.sleep(0.1)
        ca_file = tmp / "bundle.pem"
        ca_file.write_bytes(CertificateAuthority.load(state).trust_bundle_pem())
        yield Webhook(hook_port, ca_file)
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def pod(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "backend-v1-7d9f", "namespace": "default"}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "shop/backend:1"}], **spec},
    }


def patched(p: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    out = jsonpatch.apply_patch(copy.deepcopy(p), ops)
    assert schema_errors(out) == []
    return dict(out)


def test_labelled_pod_gets_the_exact_patch(webhook: Webhook) -> None:
    p = pod({"app": "backend", "version": "v1"})
    r = webhook.review(p)
    assert json.loads(base64.b64decode(r["patch"])) == [
        {"op": "add", "path": "/spec/initContainers", "value": [sidecar(16002)]},
        {"op": "add", "path": "/spec/volumes", "value": [BOOT_VOLUME]},
        {"op": "add", "path": "/metadata/annotations", "value": {"sidecar.envoykit.io/status": STATUS}},
        {"op": "add", "path": "/metadata/labels/envoykit.io~1workload", "value": "backend-v1"},
        {"op": "add", "path": "/metadata/labels/envoykit.io~1service", "value": "backend"},
    ]
    out = patched(p, r)
    assert out["metadata"]["labels"]["envoykit.io/workload"] == "backend-v1"


def test_workload_label_and_init_containers_and_volumes(webhook: Webhook) -> None:
    init = {"name": "migrate", "image": "shop/migrate:1"}
    vol = {"name": "data", "emptyDir": {}}
    p = pod(
        {"envoykit.io/workload": "backend-v1", "envoykit.io/service": "backend"},
        initContainers=[init],
        volumes=[vol],
    )
    p["metadata"]["annotations"] = {"team": "shop"}
    r = webhook.review(p)
    assert json.loads(base64.b64decode(r["patch"])) == [
        {"op": "add", "path": "/spec/initContainers/0", "value": sidecar(16002)},
        {"op": "add", "path": "/spec/volumes/-", "value": BOOT_VOLUME},
        {"op": "add", "path": "/metadata/annotations/sidecar.envoykit.io~1status", "value": STATUS},
    ]
    out = patched(p, r)
    # the sidecar starts first, before the pod's own init container
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["envoykit-proxy", "migrate"]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["data", "envoykit-bootstrap"]


def test_pods_without_labels_and_other_versions(webhook: Webhook) -> None:
    r = webhook.review(pod({"app": "backend", "version": "v2"}))
    assert json.loads(base64.b64decode(r["patch"]))[0]["value"] == [sidecar(16003)]
    r = webhook.review(pod(None))  # a pod in a labelled namespace that is no workload of the mesh
    assert r["allowed"] is False and r["status"]["code"] == 400
    assert (
        "cannot tell which workload" in r["status"]["message"]
        and "envoykit.io/workload" in r["status"]["message"]
    )
    r = webhook.review(pod({"envoykit.io/workload": "nope"}))
    assert r["allowed"] is False and "names no workload" in r["status"]["message"]


def test_refusals_and_pass_throughs(webhook: Webhook) -> None:
    r = webhook.review(pod({"app": "backend", "version": "v1"}, hostNetwork=True))
    assert r["allowed"] is False and "hostNetwork" in r["status"]["message"]
    assert "sidecar.envoykit.io/inject=false" in r["status"]["message"]
    r = webhook.review(
        pod({"app": "backend", "version": "v1", "sidecar.envoykit.io/inject": "false"}, hostNetwork=True)
    )
    assert r == {"uid": "6f1c-1", "allowed": True}
    injected = patched(
        pod({"app": "backend", "version": "v1"}), webhook.review(pod({"app": "backend", "version": "v1"}))
    )
    r = webhook.review(injected)
    assert r["allowed"] is True and "patch" not in r and "already" in r["warnings"][0]


def test_not_a_review_is_a_400(webhook: Webhook) -> None:
    status, body = webhook.post(b"{not json")
    assert status == 400
    status, body = webhook.post(
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}
    )
    assert status == 400 and "admission.k8s.io/v1" in body["error"]
    status, _ = webhook.post({}, path="/other")
    assert status == 404


def test_certificate_is_refused_for_another_name(webhook: Webhook) -> None:
    conn = _To127("evil.default.svc", webhook.port, context=webhook.ctx, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/healthz")
