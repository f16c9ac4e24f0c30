"""Control-plane benchmark: a generated mesh of 1,000 services, served to 100 simulated xDS clients.

Prints:
  * validate (schema + semantics) and translate (every node, packed into snapshots) times;
  * convergence: from the moment a change is accepted until all clients hold it, for a route change
    (RDS, the full road: parse, translate, pack; and back, a second full reload), an endpoint change
    written in mesh.yaml (the endpoint-only road of a mesh.yaml edit: parse, diff, repack) and a
    discovered endpoint change (the endpoint-only road of an EndpointSlice event,
    ``ControlPlane.update_endpoints``), measured by clients in a separate process that speak the real
    ADS gRPC API (half of them SotW, half delta by default: ``--delta-clients``; they ACK every
    response and subscribe to every EDS/RDS name they need), per protocol, with the resources per
    client each change pushed and the road the control plane took (full, endpoints, discovery);
  * resident memory of the control plane process (the clients run in a child process).
Targets (issue 6): translation < 2 s, convergence of 100 clients < 1 s, memory < 300 MB; at
Kubernetes scale (``--services 5000 --clients 1000``, issue 15): translation < 5 s, a discovered
endpoint change at every client < 2 s, memory < 1 GB.

Run: ``.venv/bin/python bench/control.py [--services 1000] [--clients 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envoykit.control.gcpause import gc_paused  # noqa: E402
from envoykit.control.model.loader import load_mesh  # noqa: E402
from envoykit.control.server import ControlPlane, build_snapshots  # noqa: E402
from envoykit.control.translate.mtls import SpiffeMeshTls  # noqa: E402
from envoykit.control.translate.translation import translate  # noqa: E402
from envoykit.control.xds.client import AdsClient, DeltaAdsClient  # noqa: E402
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE  # noqa: E402
from envoykit.core.logs import configure_logging  # noqa: E402
from envoykit.core.net import free_port  # noqa: E402

_YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def generate(services: int, canary_every: int = 10) -> dict[str, Any]:
    """A mesh of ``services`` services (one sidecar'd workload each; every ``canary_every``-th also has
    a v2 and a 90/10 VirtualService with retries, and a DestinationRule), plus an ingress gateway."""
    port = iter(range(20000, 65000))

    def a() -> str:
        return f"127.0.0.1:{next(port)}"

    def wl(name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "address": a(),
            "sidecar": {"inbound": a(), "outbound": a(), "admin": a()},
        }

    svcs, vss, drs, ingress_routes = [], [], [], []
    for i in range(services):
        name = f"svc-{i:04d}"
        workloads = [wl(f"{name}-v1", "v1")]
        if i % canary_every == 0:
            workloads.append(wl(f"{name}-v2", "v2"))
            vss.append(
                {
                    "name": name,
                    "hosts": [name],
                    "http": [
                        {
                            "route": [
                                {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                                {"destination": {"host": name, "subset": "v2"}, "weight": 10},
                            ],
                            "timeout": "2s",
                            "retries": {"attempts": 2, "per_try_timeout": "500ms"},
                        }
                    ],
                }
            )
            drs.append(
                {
                    "name": name,
                    "host": name,
                    "traffic_policy": {"outlier_detection": {"consecutive_5xx_errors": 5}},
                }
            )
        svcs.append({"name": name, "mtls": "STRICT", "workloads": workloads})
        if i < 100:
            ingress_routes.append(
                {"match": [{"uri": {"prefix": f"/{name}/"}}], "route": [{"destination": {"host": name}}]}
            )
    vss.append({"name": "ingress", "hosts": ["*"], "gateways": ["ingress"], "http": ingress_routes})
    return {
        "mesh_id": "bench",
        "trust_domain": "bench.local",
        "control_plane": {"xds": a()},
        "extensions": {
            "authz": {"address": a()},
            "ratelimit": {"address": a()},
            "telemetry": {"address": a()},
        },
        "services": svcs,
        "gateways": [{"name": "ingress", "kind": "ingress", "address": a(), "admin": a()}],
        "virtual_services": vss,
        "destination_rules": drs,
    }


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB."""
    current = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return current, peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- clients (run in a child process) --


async def client(address: str, node: str, token: str, ready: asyncio.Event, out: list[str]) -> None:
    async with AdsClient(address, node, token, own_connection=True) as ads:  # as each Envoy
        eds_names: list[str] = []
        rds_names = ["outbound", f"inbound|{node.split('~', 1)[1]}"]
        await ads.send(CLUSTER)
        synced: set[str] = set()
        while True:
            resp = await ads.recv(timeout=600)
            t = resp.type_url
            if t == CLUSTER:
                eds_names = sorted({r.value and _cluster_eds_name(r) for r in resp.resources} - {""})
                await ads.ack(resp)
                await ads.send(ENDPOINT, eds_names, nonce="") if ENDPOINT not in synced else await ads.send(
                    ENDPOINT, eds_names, version="", nonce=""
                )
            elif t == ENDPOINT:
                await ads.ack(resp, eds_names)
                if LISTENER not in synced:
                    await ads.send(LISTENER)
            elif t == LISTENER:
                await ads.ack(resp)
                if ROUTE not in synced:
                    await ads.send(ROUTE, rds_names)
            elif t == ROUTE:
                await ads.ack(resp, rds_names)
            if t in synced and ready.is_set():
                out.append(
                    f"GOT {node} {t.rsplit('.', 1)[1]} {resp.version_info} {time.time():.6f} sotw "
                    f"{len(resp.resources)}"
                )
            synced.add(t)
            if len(synced) == 4:
                ready.set()


async def delta_client(address: str, node: str, token: str, ready: asyncio.Event, out: list[str]) -> None:
    """As :func:`client`, over incremental xDS (Envoy with ``ads_config.api_type: DELTA_GRPC``):
    subscribes to the EDS names of new clusters only, and each response carries only what changed."""
    async with DeltaAdsClient(address, node, token, own_connection=True) as ads:
        eds: set[str] = set()
        rds_names = ["outbound", f"inbound|{node.split('~', 1)[1]}"]
        await ads.subscribe(CLUSTER)  # naming nothing: the wildcard
        synced: set[str] = set()
        while True:
            resp = await ads.recv(timeout=600)
            t = resp.type_url
            if t == CLUSTER:
                names = {_cluster_eds_name(r.resource) for r in resp.resources} - {""}
                await ads.ack(resp)
                if names - eds:
                    await ads.subscribe(ENDPOINT, sorted(names - eds))
                    eds |= names
            else:
                await ads.ack(resp)
            if t == ENDPOINT and LISTENER not in synced:
                await ads.subscribe(LISTENER)
            elif t == LISTENER and ROUTE not in synced:
                await ads.subscribe(ROUTE, rds_names)
            if t in synced and ready.is_set():
                out.append(
                    f"GOT {node} {t.rsplit('.', 1)[1]} {resp.system_version_info} {time.time():.6f} "
                    f"delta {len(resp.resources) + len(resp.removed_resources)}"
                )
            synced.add(t)
            if len(synced) == 4:
                ready.set()


def _cluster_eds_name(any_msg: Any) -> str:
    from envoy.config.cluster.v3 import cluster_pb2

    c = cluster_pb2.Cluster()
    any_msg.Unpack(c)
    return c.eds_cluster_config.service_name if c.type == cluster_pb2.Cluster.EDS else ""


async def run_clients(address: str, state_dir: str, nodes: list[str]) -> None:
    from envoykit.control.xds.tokens import NodeTokens

    tokens = NodeTokens(state_dir)
    readies = [asyncio.Event() for _ in nodes]
    out: list[str] = []
    tasks = [  # "d:<node id>": that node speaks incremental xDS
        asyncio.create_task(
            delta_client(address, n[2:], tokens.token_for(n[2:]), r, out)
            if n.startswith("d:")
            else client(address, n, tokens.token_for(n), r, out)
        )
        for n, r in zip(nodes, readies, strict=True)
    ]
    all_ready = asyncio.ensure_future(asyncio.gather(*(r.wait() for r in readies)))
    waiting: list[asyncio.Future[Any]] = [all_ready, *tasks]
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:  # a client that died before it synced would otherwise hang the run
        if t in done and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    await all_ready
    print("READY", flush=True)
    while True:
        await asyncio.sleep(0.01)
        while out:
            print(out.pop(0), flush=True)
        if any(t.done() for t in tasks):
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()  # type: ignore[misc]


# -- the control plane side --


class DiscoveredEndpoints:
    """An endpoint source (``envoykit.control.translate.clusters.EndpointSource``) as a discovery source is one:
    the model's endpoints, except services whose addresses discovery reported (``moved``). A change
    here then ``ControlPlane.update_endpoints`` is the road of an EndpointSlice event (envoykit.k8s)."""

    def __init__(self) -> None:
        self.moved: dict[str, list[Any]] = {}

    def __call__(self, mesh: Any, svc: Any, subset: str) -> list[Any]:
        from envoykit.control.translate.clusters import model_endpoints

        return self.moved.get(svc.name) or model_endpoints(mesh, svc, subset)


async def converge(
    cp: ControlPlane,
    proc: subprocess.Popen[str],
    edit: Any,
    want: str,
    n: int,
    *,
    in_file: bool = True,
    road: Any = None,
) -> dict[str, Any]:
    """Apply ``edit`` (the mesh file's new text, or with ``in_file=False`` a function changing what it
    changes itself), then ``road`` (default: a full reload).

    Returns:
        ``reload_s`` (seconds of the road), ``all_s`` and per protocol ``sotw_s`` / ``delta_s``
        (seconds from the change being applied until every client of that protocol got a new
        ``want`` response), ``road`` (the control plane's road), and ``resources``: per protocol and
        xDS type, resources per client in the responses read until then (what the change pushed).
    """
    if in_file:  # ``edit`` is the new text, written before the control plane started (no YAML work here)
        cp.config.path.write_text(edit)
    else:
        edit(None)
    t0 = time.perf_counter()
    applied: list[float] = []
    cp.on_apply(lambda _: applied.append(time.time()))  # when the new snapshots are in the cache
    ok = await asyncio.to_thread(road or cp.reload)
    assert ok, cp.config.last_error
    reload_s = time.perf_counter() - t0
    while not applied:
        await asyncio.sleep(0.001)
    applied_wall = applied[-1]
    cp._on_apply.clear()
    got: dict[str, tuple[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    clients: dict[str, set[str]] = {}
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    while len(got) < n:
        line = await loop.run_in_executor(None, proc.stdout.readline)
        if not line:
            raise RuntimeError("clients exited")
        parts = line.split()
        if parts[0] != "GOT" or float(parts[4]) < applied_wall:  # a late response to an earlier change
            continue
        _, node, type_name, _version, at, mode, nres = parts
        by_type = counts.setdefault(mode, {})
        by_type[type_name] = by_type.get(type_name, 0) + int(nres)
        clients.setdefault(mode, set()).add(node)
        if type_name == want:
            got.setdefault(node, (mode, float(at)))
    out: dict[str, Any] = {
        "reload_s": round(reload_s, 3),
        "all_s": round(max(t for _, t in got.values()) - applied_wall, 3),
        "road": cp.current.road,
        "resources": {},
    }
    for mode in ("sotw", "delta"):
        times = [t for m, t in got.values() if m == mode]
        if times:
            out[f"{mode}_s"] = round(max(times) - applied_wall, 3)
            per = sum(1 for m, _ in got.values() if m == mode)
            out["resources"][mode] = {t: round(c / per, 1) for t, c in sorted(counts[mode].items())}
    return out


def prepare(folder: Path, services: int) -> dict[str, Any]:
    """Write the generated mesh (``mesh.yaml``) and its edited versions (``route.yaml``,
    ``endpoint.yaml``, ``route_back.yaml``) to ``folder``, and time validate, translate and pack once. Runs in a child
    process, so that the control plane's process holds none of this."""
    doc = generate(services)
    path = folder / "mesh.yaml"
    path.write_text(yaml.dump(doc, Dumper=_YAML_DUMPER, sort_keys=False))
    with gc_paused():  # as the control plane compiles (envoykit.control.gcpause)
        c0 = time.process_time()
        t0 = time.perf_counter()
        loaded = load_mesh(path)
        t1 = time.perf_counter()
        translation = translate(loaded.mesh, loaded.base_dir, SpiffeMeshTls())
        t2 = time.perf_counter()
        build_snapshots(translation)
        t3 = time.perf_counter()
        cpu = time.process_time() - c0
    # route change: a canary's weights; endpoint change: an app (and its sidecar's inbound) moved
    doc["virtual_services"][0]["http"][0]["route"][0]["weight"] = 80
    doc["virtual_services"][0]["http"][0]["route"][1]["weight"] = 20
    (folder / "route.yaml").write_text(yaml.dump(doc, Dumper=_YAML_DUMPER, sort_keys=False))
    doc["services"][1]["workloads"][0]["address"] = "127.0.0.1:64999"
    doc["services"][1]["workloads"][0]["sidecar"]["inbound"] = "127.0.0.1:64998"
    (folder / "endpoint.yaml").write_text(yaml.dump(doc, Dumper=_YAML_DUMPER, sort_keys=False))
    doc["virtual_services"][0]["http"][0]["route"][0]["weight"] = 90
    doc["virtual_services"][0]["http"][0]["route"][1]["weight"] = 10
    (folder / "route_back.yaml").write_text(yaml.dump(doc, Dumper=_YAML_DUMPER, sort_keys=False))
    return {
        "services": services,
        "nodes": len(translation.nodes),
        "validate_s": round(t1 - t0, 3),
        "translate_s": round(t2 - t1, 3),
        "snapshots_s": round(t3 - t2, 3),
        "compile_cpu_s": round(cpu, 3),  # the same three in CPU seconds: what a loaded machine disturbs least
    }


async def main_async(services: int, clients: int, delta_clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="envoykit-bench-") as tmp:
        r = subprocess.run(
            [sys.executable, __file__, "--prepare-mode", tmp, str(services)],
            capture_output=True,
            text=True,
            check=True,
        )
        figures: dict[str, Any] = json.loads(r.stdout)
        path = Path(tmp) / "mesh.yaml"
        route_text = (Path(tmp) / "route.yaml").read_text()
        endpoint_text = (Path(tmp) / "endpoint.yaml").read_text()
        route_back_text = (Path(tmp) / "route_back.yaml").read_text()
        state = Path(tmp) / "state"
        discovered = DiscoveredEndpoints()
        cp = ControlPlane(
            path, address=f"127.0.0.1:{free_port()}", state_dir=state, watch=False, endpoints=discovered
        )
        await cp.start()
        # the last ``delta_clients`` speak incremental xDS
        nodes = [
            f"{'d:' if i >= clients - delta_clients else ''}sidecar~svc-{i:04d}-v1" for i in range(clients)
        ]
        proc = subprocess.Popen(
            [sys.executable, __file__, "--client-mode", cp.address, str(state), *nodes],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            t4, c4 = time.perf_counter(), time.process_time()
            line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
            assert line.strip() == "READY", line
            figures["initial_sync_s"] = round(time.perf_counter() - t4, 3)
            # the control plane's own CPU (its threads included): survives a noisy machine better
            figures["initial_sync_cpu_s"] = round(time.process_time() - c4, 3)

            def discovered_change(_: Any) -> None:  # a pod of svc-0002 replaced: a new IP from the API
                from envoykit.control.model.types import Address

                discovered.moved["svc-0002"] = [Address(host="10.1.2.3", port=15006)]

            c5 = time.process_time()
            figures["discovery_change"] = await converge(
                cp,
                proc,
                discovered_change,
                "ClusterLoadAssignment",
                clients,
                in_file=False,
                road=lambda: cp.update_endpoints(["svc-0002"]),  # the endpoint-only road of discovery
            )
            figures["discovery_change"]["cpu_s"] = round(time.process_time() - c5, 3)
            # serving, the initial sync of every client and the endpoint-only road; then reloads
            figures["serving_peak_rss_mb"] = round(rss_mb()[1], 1)
            figures["route_change"] = await converge(cp, proc, route_text, "RouteConfiguration", clients)
            c6 = time.process_time()
            figures["endpoint_change"] = await converge(
                cp, proc, endpoint_text, "ClusterLoadAssignment", clients
            )
            figures["endpoint_change"]["cpu_s"] = round(time.process_time() - c6, 3)
            # back to the first routes: a second full reload (the peak below spans both)
            figures["route_back"] = await converge(cp, proc, route_back_text, "RouteConfiguration", clients)
        finally:
            proc.kill()
            proc.wait()
            # let the server see every stream end first: handlers cancelled by stop() make gRPC print
            # a traceback each
            deadline = time.monotonic() + 10
            while cp.ads.streams and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await cp.stop(0.1)
        current, peak = rss_mb()
        figures["rss_mb"] = round(current, 1)
        figures["peak_rss_mb"] = round(peak, 1)
        return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client-mode":
        asyncio.run(run_clients(sys.argv[2], sys.argv[3], sys.argv[4:]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare-mode":
        print(json.dumps(prepare(Path(sys.argv[2]), int(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument(
        "--delta-clients", type=int, default=None, help="how many clients speak delta xDS (default: half)"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    delta = args.clients // 2 if args.delta_clients is None else min(args.delta_clients, args.clients)
    configure_logging("warning")  # one line per stream and certificate would bury the figures
    figures = asyncio.run(main_async(args.services, args.clients, delta))
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(
        f"control plane: {figures['services']} services, {figures['nodes']} nodes, {args.clients} xDS "
        f"clients ({args.clients - delta} SotW, {delta} delta)"
    )
    big = args.services >= 5000  # issue 15's targets at Kubernetes scale (5,000 services, 1,000 clients)
    total = figures["validate_s"] + figures["translate_s"] + figures["snapshots_s"]
    rows = [
        ("validate (schema + semantics)", f"{figures['validate_s']:.3f} s", ""),
        ("translate (every node)", f"{figures['translate_s']:.3f} s", ""),
        ("pack snapshots", f"{figures['snapshots_s']:.3f} s", ""),
        ("validate + translate + pack", f"{total:.3f} s", "target < 5 s" if big else "target < 2 s"),
        ("validate + translate + pack: CPU", f"{figures['compile_cpu_s']:.3f} s", ""),
        ("initial sync of all clients", f"{figures['initial_sync_s']:.3f} s", ""),
        ("initial sync: control-plane CPU", f"{figures['initial_sync_cpu_s']:.3f} s", ""),
    ]
    changes = [
        ("discovered endpoint change", "discovery_change", "target < 2 s" if big else ""),
        ("route change (full reload)", "route_change", "" if big else "target < 1 s"),
        ("mesh.yaml endpoint change", "endpoint_change", "" if big else "target < 1 s"),
        ("route change back (full reload)", "route_back", ""),
    ]
    for label, key, target in changes:
        c = figures[key]
        rows.append((f"{label}: road", c["road"], ""))
        rows.append((f"{label}: apply", f"{c['reload_s']:.3f} s", ""))
        rows.append((f"{label}: all clients have it", f"{c['all_s']:.3f} s", target))
        for mode in ("sotw", "delta"):
            if f"{mode}_s" in c:
                pushed = ", ".join(f"{t} {n:g}" for t, n in c["resources"][mode].items())
                rows.append((f"  {mode} clients", f"{c[f'{mode}_s']:.3f} s", f"per client: {pushed}"))
        if "cpu_s" in c:
            rows.append((f"{label}: control-plane CPU", f"{c['cpu_s']:.3f} s", ""))
    mem = "target < 1 GB" if big else "target < 300 MB"
    rows.append(("peak memory: sync + endpoint road", f"{figures['serving_peak_rss_mb']:.0f} MB", mem))
    rows.append(
        (
            "resident memory (now / peak of the run)",
            f"{figures['rss_mb']:.0f} / {figures['peak_rss_mb']:.0f} MB",
            mem + " (two full reloads included)",
        )
    )
    for name, value, target in rows:
        print(f"  {name:<50} {value:>12}  {target}")


if __name__ == "__main__":
    main()
