"""Benchmark: the demo mesh with every extension on, against the same mesh with extensions off.

Path: client → ingress → frontend's sidecar → frontend app → its sidecar → backend's sidecar → backend
app, over mTLS between sidecars. (a) the mesh of examples/mesh.yaml with its extensions removed
(no ext_authz, rate limit, telemetry, processors or Wasm; mTLS, routing and the canary split stay);
(b) the mesh as written, every extension on. Both run on free ports through the local runner, one
after the other, in one run. Prints requests/s and p50/p99 of each (wrk, closed loop) and b/a.

Run: ``.venv/bin/python bench/mesh.py [--seconds 10] [--connections 8] [--mesh examples/mesh.yaml]``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LoadResult, table, wrk

from envoykit.control.model.loader import load_mesh
from envoykit.control.model.mesh import Mesh, ProxyExtensions
from envoykit.mesh.planner import PlanOptions, plan_mesh
from envoykit.mesh.state import StateDir
from envoykit.mesh.supervisor import Supervisor
from envoykit.mesh.view import absolute_paths


def without_extensions(mesh: Mesh) -> Mesh:
    """``mesh`` with no extension on any proxy and no per-route rate limits or authz settings."""
    services = [s.model_copy(update={"extensions": ProxyExtensions()}) for s in mesh.services]
    gateways = [g.model_copy(update={"extensions": ProxyExtensions()}) for g in mesh.gateways]
    vss = [
        vs.model_copy(
            update={"http": [r.model_copy(update={"rate_limits": [], "authz": None}) for r in vs.http]}
        )
        for vs in mesh.virtual_services
    ]
    return mesh.model_copy(
        update={
            "services": services,
            "gateways": gateways,
            "virtual_services": vss,
            "extensions": mesh.extensions.model_copy(update={"wasm": [], "processors": []}),
        }
    )


def measure(
    name: str, mesh_file: Path, run_config: Path, work: Path, seconds: int, connections: int
) -> LoadResult:
    """Start the mesh of ``mesh_file`` on free ports, load its ingress with wrk, stop it."""
    state = StateDir(work / name.split()[0])
    state.prepare()
    plan = plan_mesh(
        mesh_file,
        state,
        PlanOptions(run_config=run_config, free_ports=True, prometheus=False, envoy_log_level="warning"),
    )
    sup = Supervisor(plan, state, console=Console(file=io.StringIO()), grace_s=5)
    ready_s = sup.start()
    try:
        print(f"{name}: {len(plan.components)} processes ready in {ready_s:.1f}s", file=sys.stderr)
        wrk(f"{name} (warm-up)", f"{plan.ingress}/", seconds=2, connections=connections)
        return wrk(name, f"{plan.ingress}/", seconds=seconds, connections=connections)
    finally:
        sup.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mesh", type=Path, default=Path("examples/mesh.yaml"))
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args()
    loaded = load_mesh(args.mesh)
    with tempfile.TemporaryDirectory(prefix="envoykit-bench-mesh-") as tmp:
        work = Path(tmp)
        bare = work / "mesh-bare.yaml"
        stripped = without_extensions(absolute_paths(loaded.mesh, loaded.base_dir))
        bare.write_text(
            yaml.safe_dump(stripped.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
        )
        run_config = args.mesh.parent / "apps" / "run.yaml"  # the bare copy lives elsewhere
        base = measure("a: mesh, extensions off", bare, run_config, work, args.seconds, args.connections)
        full = measure(
            "b: mesh, every extension on", args.mesh, run_config, work, args.seconds, args.connections
        )
    print(table([base, full], base))
    print(f"ratio b/a (requests/s): {full.rps / base.rps:.2f}")


if __name__ == "__main__":
    main()
