"""`envoykit k8s inject -f deploy.yaml`: the webhook's patch applied offline to pod templates."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from envoykit.cli import main
from tests.k8s.helpers import REPO, schema_errors

DEPLOY = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: mesh}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend-v2}
spec:
  selector: {matchLabels: {app: backend, version: v2}}
  template:
    metadata: {labels: {app: backend, version: v2}}
    spec:
      containers: [{name: app, image: shop/backend:2, ports: [{containerPort: 9003}]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {envoykit.io/workload: frontend-v1}}
        spec:
          restartPolicy: Never
          containers: [{name: app, image: shop/report:1}]
"""


def run(*args: str, input: str | None = None) -> object:
    return CliRunner().invoke(
        main, ["k8s", "inject", "--mesh", str(REPO / "examples" / "mesh.yaml"), *args], input=input
    )


def test_inject_deployment_and_cronjob(tmp_path: Path) -> None:
    src = tmp_path / "deploy.yaml"
    src.write_text(DEPLOY)
    out = tmp_path / "out.yaml"
    r = run("-f", str(src), "-o", str(out))
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    docs = list(yaml.safe_load_all(out.read_text()))
    assert docs[0] == yaml.safe_load(DEPLOY.split("---")[0])  # the Service passes through
    tpl = docs[1]["spec"]["template"]
    (proxy,) = tpl["spec"]["initContainers"]
    assert proxy["name"] == "envoykit-proxy" and proxy["ports"][0]["containerPort"] == 16003
    assert tpl["spec"]["volumes"][0]["secret"]["secretName"] == "envoykit-bootstrap-backend-v2"
    assert tpl["metadata"]["labels"]["envoykit.io/workload"] == "backend-v2"
    cron = docs[2]["spec"]["jobTemplate"]["spec"]["template"]
    assert cron["spec"]["initContainers"][0]["ports"][0]["containerPort"] == 16001
    for d in docs:
        assert schema_errors(d) == []
    assert "Deployment backend-v2: injected as workload backend-v2" in r.output  # type: ignore[attr-defined]
    # injecting the result again changes nothing
    again = run("-f", str(out))
    assert again.exit_code == 0 and "Deployment backend-v2: already" in again.output  # type: ignore[attr-defined]


def test_inject_refuses_host_network_naming_the_document(tmp_path: Path) -> None:
    src = tmp_path / "ds.yaml"
    src.write_text(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: backend}}\n"
        "  template:\n    metadata: {labels: {app: backend, version: v1}}\n"
        "    spec: {hostNetwork: true, containers: [{name: a, image: x}]}\n"
    )
    r = run("-f", str(src), "-o", str(tmp_path / "o.yaml"))
    assert r.exit_code == 1  # type: ignore[attr-defined]
    assert "document 1 (DaemonSet agent): pod uses hostNetwork" in r.output  # type: ignore[attr-defined]
    assert not (tmp_path / "o.yaml").exists()
