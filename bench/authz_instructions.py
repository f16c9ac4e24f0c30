"""Benchmark: Envoy's own instructions per request with ext_authz and the native gate (callgrind).

Throughput ratios on a shared 2-core machine move by tens of percent between runs; the instructions
Envoy executes per request do not (valgrind's callgrind counts them; repeated figures agree within a few
percent). One Envoy (``--concurrency 1``) runs under callgrind with the scenarios of ``bench/authz.py``
on direct-response routes: (a) bare; (c) the ten YAML policies as native RBAC; (g100) the native gate
with every request decided natively; (g) the gate with 1 request in 5 needing Python; (t) every
request calling ext_authz on a server answering a constant; (b) every request calling the ten-rule
Python policy; (g100l/s/n) (g100) with the gate's decision log (``envoykit.core.gatelog``) writing
every native decision, allows sampled 1 in 10, and no allows (the access-log filter alone). Each figure: hey sends a fixed number of requests after a warm-up, callgrind's
counters are zeroed before and dumped after, and the total is divided by the requests sent.

Prints kIr (thousands of instructions) per request, what each part adds, and the ratio each
scenario could reach against (a) if Envoy's instructions alone set the pace (a ceiling: the servers
and the load generator share the machine too, and the ext_authz path runs at fewer instructions per
µs than bare Envoy).

Run: ``.venv/bin/python bench/authz_instructions.py [--requests 800]`` (needs valgrind and hey;
about five minutes: Envoy runs some 50 times slower under callgrind).
"""

from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authz import FLOOR_SERVER, GATE_RULES, POLICY, YAML_POLICY
from callgrind import envoy_under_callgrind, kir_per_request, require_tools, send
from google.protobuf.json_format import MessageToDict

from envoykit.authz import load_policy
from envoykit.authz.gate import compile_gate
from envoykit.authz.rbac import compile_policy_dir
from envoykit.core import EnvoyProcess, free_port
from envoykit.core.gatelog import native_decision_logs
from tests.authz.conftest import ext_authz_filter
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener
from tests.serverproc import ServerProcess

# paths each scenario sends, spread evenly; /orders/* is the only prefix the gate's Python rules take
MIX = ["/api/a", "/public/b", "/api/c", "/public/d", "/orders/1"]
SCENARIOS = [  # (label, listener, paths)
    ("(a) bare", "plain", ["/api/x"]),
    ("(c) ten YAML policies as native RBAC", "native", ["/api/x"]),
    ("(g100) gate, every request native", "gate", MIX[:4]),
    ("(g100l) g100 + decision log, every line", "gatelog1", MIX[:4]),
    ("(g100s) g100 + decision log, allows 1 in 10", "gatelog01", MIX[:4]),
    ("(g100n) g100 + decision log, allows 0", "gatelog0", MIX[:4]),
    ("(g) gate, 1 in 5 needs Python", "gate", MIX),
    ("(t) ext_authz, server answering a constant", "floor", ["/api/x"]),
    ("(b) ext_authz, ten Python rules", "authz", ["/api/x"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=800, help="requests per scenario")
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    require_tools()
    with tempfile.TemporaryDirectory(prefix="bench-authz-ir-") as tmpname:
        tmp = Path(tmpname)
        dirs = {}
        for name, files in {
            "rules": {"rules.py": POLICY},
            "yaml": {"policy.yaml": YAML_POLICY},
            "gate": {"policy.yaml": YAML_POLICY, "rules.py": GATE_RULES},
        }.items():
            dirs[name] = tmp / name
            dirs[name].mkdir()
            for fname, text in files.items():
                (dirs[name] / fname).write_text(text)
        servers = {
            n: ServerProcess("authz", ["--policy-dir", str(dirs[d])], tmp, health=True).start()
            for n, d in (("authz", "rules"), ("gate", "gate"))
        }
        for s in servers.values():
            atexit.register(s.stop)
        floor = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER, str(free_port())], stdout=subprocess.PIPE, text=True
        )
        atexit.register(floor.kill)
        assert floor.stdout is not None
        floor_port = int(floor.stdout.readline())

        gate = compile_gate(load_policy(dirs["gate"]))
        gate_filters = [MessageToDict(f, preserving_proto_field_name=True) for f in gate.filters]
        enabled = MessageToDict(gate.ext_authz_enabled, preserving_proto_field_name=True)
        gate_filters.append(ext_authz_filter("authz_gate", filter_enabled_metadata=enabled))
        native = [
            MessageToDict(f, preserving_proto_field_name=True)
            for f in compile_policy_dir(load_policy(dirs["yaml"]))
        ]
        normalise = {
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
        }
        ports = {name: free_port() for name in ("plain", "native", "gate", "floor", "authz")}
        ok = [direct_response(200, "ok")]
        logged = []
        for name, rate in (("gatelog1", 1.0), ("gatelog01", 0.1), ("gatelog0", 0.0)):
            ports[name] = free_port()
            loggers = native_decision_logs(gate, str(tmp / f"{name}.log"), sample_allow=rate, node="bench")
            hcm = {
                **normalise,
                "access_log": [MessageToDict(x, preserving_proto_field_name=True) for x in loggers],
            }
            logged.append(http_listener(ports[name], ok, gate_filters, name=name, hcm_extra=hcm))
        cfg = bootstrap(
            [
                *logged,
                http_listener(ports["plain"], ok, name="plain"),
                http_listener(ports["native"], ok, native, name="native"),
                http_listener(ports["gate"], ok, gate_filters, name="gate", hcm_extra=normalise),
                http_listener(ports["floor"], ok, [ext_authz_filter("floor")], name="floor"),
                http_listener(ports["authz"], ok, [ext_authz_filter("authz")], name="authz"),
            ],
            [
                cluster("authz", servers["authz"].port, http2=True),
                cluster("authz_gate", servers["gate"].port, http2=True),
                cluster("floor", floor_port, http2=True),
            ],
        )
        os.environ["ENVOY_BIN"] = envoy_under_callgrind(tmp)
        env = EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench-ir")
        try:
            env.start(timeout=300)
            assert env.proc is not None
            pid = env.proc.pid
            kir: dict[str, float] = {}
            print(f"{'scenario':<44} {'kIr/req':>8} {'calls':>6}")
            for label, listener, paths in SCENARIOS:
                urls = [f"http://127.0.0.1:{ports[listener]}{p}" for p in paths]
                send(urls, min(200, args.requests), args.connections)  # warm-up
                before = env.stats(f"http.{listener}.ext_authz.")
                # settle: Envoy's file logs are written by its flush thread, about every second
                settle = 1.5 if listener.startswith("gatelog") else 0.0
                kir[label] = kir_per_request(tmp, pid, urls, args.requests, args.connections, settle)
                after = env.stats(f"http.{listener}.ext_authz.")
                calls = sum(v - before.get(k, 0) for k, v in after.items() if k.endswith((".ok", ".denied")))
                sent = max(1, args.requests // len(urls)) * len(urls)
                print(f"{label:<44} {kir[label]:8.1f} {calls / sent:6.0%}", flush=True)
            bare = kir["(a) bare"]
            per_call = kir["(t) ext_authz, server answering a constant"] - bare
            gate_alone = kir["(g100) gate, every request native"] - bare
            print(
                f"\neach ext_authz Check adds {per_call:.0f} kIr ({per_call / bare:.1f}x a bare request); "
                f"the gate's filters with ext_authz skipped add {gate_alone:.0f} kIr"
            )
            g100 = kir["(g100) gate, every request native"]
            for label in (
                "(g100l) g100 + decision log, every line",
                "(g100s) g100 + decision log, allows 1 in 10",
                "(g100n) g100 + decision log, allows 0",
            ):
                print(f"{label}: +{kir[label] - g100:.1f} kIr per request over (g100)")
            print("ceiling if Envoy's instructions alone set the pace (a / scenario):")
            for label, v in kir.items():
                if label != "(a) bare":
                    print(f"  {label:<44} {bare / v:.2f}")
        finally:
            env.cleanup()
            for s in servers.values():
                s.stop()
            floor.kill()


if __name__ == "__main__":
    main()
