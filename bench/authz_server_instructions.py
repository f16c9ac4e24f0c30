"""Benchmark: the authz server's own instructions per decision behind Envoy (callgrind on the server).

The server's CPU µs per call moves with the machine's load (the cache and core it shares with Envoy and
the load generator); the instructions it executes per Check do not (repeats agree within ~1 %). Envoy
runs natively; each server runs under valgrind's callgrind: (b) ``envoykit authz serve`` with the ten
Python rules of ``bench/authz.py``, and (t) the lean server answering a constant (its HTTP/2, gRPC and
protobuf parse: the floor under any policy). For each, hey sends a fixed number of requests after a
warm-up; callgrind's counters are zeroed before and dumped after; the total is divided by the Checks
Envoy made (its ``ext_authz.ok``/``denied`` counters).

Prints kIr (thousands of instructions) per Check for (b) and (t), and (b) - (t), the policy path's own
share. Under callgrind the server runs ~50x slower, so it sees larger batches of Checks per read than at
full speed; the figure is for comparing code, not a forecast of µs.

Run: ``.venv/bin/python bench/authz_server_instructions.py [--requests 1000]`` (needs valgrind and hey;
about two minutes).
"""

from __future__ import annotations

import argparse
import atexit
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authz import FLOOR_SERVER, POLICY
from callgrind import dumped_instructions, require_tools, send

from envoykit.core import EnvoyProcess, free_port
from tests.authz.conftest import ext_authz_filter
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener
from tests.serverproc import ServerProcess


def _callgrind(tmp: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={tmp}/{name}.%p"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=1000, help="requests per scenario")
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    require_tools()
    with tempfile.TemporaryDirectory(prefix="bench-authz-server-ir-") as tmpname:
        tmp = Path(tmpname)
        policy = tmp / "policy"
        policy.mkdir()
        (policy / "rules.py").write_text(POLICY)
        srv = ServerProcess("authz", ["--policy-dir", str(policy)], tmp, health=True)
        srv.command = _callgrind(tmp, "authz") + srv.command
        srv.start(timeout=400)  # imports run ~50x slower under callgrind
        atexit.register(srv.stop)
        floor = subprocess.Popen(
            [*_callgrind(tmp, "floor"), sys.executable, "-c", FLOOR_SERVER, str(free_port())],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        atexit.register(floor.kill)
        assert floor.stdout is not None and srv.proc is not None
        floor_port = int(floor.stdout.readline())
        ports = {"authz": free_port(), "floor": free_port()}
        ok = [direct_response(200, "ok")]
        filters = {n: ext_authz_filter(n) for n in ports}
        for f in filters.values():  # the servers answer ~50x slower under callgrind
            f["typed_config"]["grpc_service"]["timeout"] = "5s"
        cfg = bootstrap(
            [http_listener(ports[n], ok, [filters[n]], name=n) for n in ports],
            [
                cluster("authz", srv.port, http2=True, timeout_s=5.0),
                cluster("floor", floor_port, http2=True, timeout_s=5.0),
            ],
        )
        env = EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench-server-ir")
        pids = {"authz": srv.proc.pid, "floor": floor.pid}
        try:
            env.start()
            kir: dict[str, float] = {}
            for name, label in (("authz", "(b) ten Python rules"), ("floor", "(t) constant answer")):
                urls = [f"http://127.0.0.1:{ports[name]}/api/x"]
                send(urls, 300, args.connections)  # warm-up: caches filled, code paths compiled
                before = env.stats(f"http.{name}.ext_authz.")
                subprocess.run(["callgrind_control", "-z", str(pids[name])], check=True, capture_output=True)
                send(urls, args.requests, args.connections)
                subprocess.run(["callgrind_control", "-d", str(pids[name])], check=True, capture_output=True)
                after = env.stats(f"http.{name}.ext_authz.")
                checks = sum(v - before.get(k, 0) for k, v in after.items() if k.endswith((".ok", ".denied")))
                kir[name] = dumped_instructions(tmp, pids[name], prefix=name) / max(1, checks) / 1000
                print(f"{label:<28} {kir[name]:7.1f} kIr per Check ({checks} Checks)", flush=True)
            print(f"the policy path's own share, (b) - (t): {kir['authz'] - kir['floor']:.1f} kIr per Check")
        finally:
            env.cleanup()
            srv.stop()
            floor.kill()


if __name__ == "__main__":
    main()
