"""Benchmark: Envoy's own instructions per request for each telemetry transport (callgrind).

On the shared 2-core machine throughput ratios move by tens of percent between runs and CPU time per
request by several µs; the instructions Envoy executes per request do not. One Envoy
(``--concurrency 1``) runs under callgrind with the listeners of ``bench/telemetry.py``, built by the
control plane's own builders: (a) no telemetry; (b) the stats transport (``envoy.access_loggers.stats``,
Istio's metrics counted in Envoy); (c) the same with Envoy's JSON file log; (g) the ``http_grpc`` stream
to a real ``envoykit telemetry serve``. For each: hey sends a fixed number of requests after a warm-up,
callgrind's counters are zeroed before and dumped two seconds after the last request (so the loggers'
periodic flushes, every second, are counted), and the total is divided by the requests sent.

Prints kIr (thousands of instructions) per request, what each transport adds, and the ratio each could
reach against (a) if Envoy's instructions alone set the pace (a ceiling: wrk and the server share the
machine too).

Run: ``.venv/bin/python bench/telemetry_instructions.py [--requests 1000]`` (needs valgrind and hey;
a few minutes: Envoy runs some 50 times slower under callgrind).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callgrind import envoy_under_callgrind, kir_per_request, require_tools, send
from google.protobuf.json_format import MessageToDict

from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.model.types import Address
from envoykit.control.translate.accesslog import http_access_logs, logger_dict
from envoykit.control.translate.bootstrap import inline_headers
from envoykit.core import EnvoyProcess, free_port
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener
from tests.serverproc import ServerProcess
from tests.telemetry.helpers import BACKEND

NODE_ID = "sidecar~backend-v2"
SCENARIOS = [  # (label, listener)
    ("(a) no telemetry", "plain"),
    ("(b) stats transport (metrics)", "stats"),
    ("(c) stats + JSON file log", "json_log"),
    ("(g) http_grpc stream", "grpc_stream"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=1000, help="requests per scenario")
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    require_tools()
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-ir-") as tmpname:
        tmp = Path(tmpname)
        srv = ServerProcess("telemetry", ["--log-level", "warning"], tmp).start()
        atexit.register(srv.stop)
        als = AccessLogServer(address=Address(port=srv.port))
        node = {**BACKEND, "id": NODE_ID}

        def loggers(transport: str, json_log: str | None = None) -> list[dict]:
            conf = als.model_copy(update={"transport": transport, "json_log": json_log})
            return [logger_dict(a) for a in http_access_logs(conf, "destination", node=node)]

        hcm = {
            "plain": None,
            "stats": loggers("stats"),
            "json_log": loggers("stats", str(tmp / "envoy.json")),
            "grpc_stream": loggers("grpc"),
        }
        ports = {name: free_port() for name in hcm}
        ok = [direct_response(200, "ok")]
        listeners = [
            http_listener(ports[n], ok, name=n, hcm_extra={"access_log": logs} if logs else None)
            for n, logs in hcm.items()
        ]
        cfg = bootstrap(listeners, [cluster("envoykit_telemetry", srv.port, http2=True)])
        cfg["node"] = {"id": NODE_ID, "cluster": "backend", "metadata": BACKEND}
        cfg["inline_headers"] = [MessageToDict(h) for h in inline_headers()]  # as a sidecar's bootstrap
        os.environ["ENVOY_BIN"] = envoy_under_callgrind(tmp)
        flush = ["--file-flush-interval-msec", "1000"]  # as envoykit up runs its Envoys
        env = EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench-ir", extra_args=flush)
        try:
            env.start(timeout=300)
            assert env.proc is not None
            pid = env.proc.pid
            kir: dict[str, float] = {}
            print(f"{'scenario':<34} {'kIr/req':>8}")
            for label, listener in SCENARIOS:
                urls = [f"http://127.0.0.1:{ports[listener]}/x"]
                send(urls, min(200, args.requests), args.connections)  # warm-up
                time.sleep(2)
                # settle: the loggers' periodic flushes are Envoy's work for these requests
                kir[label] = kir_per_request(tmp, pid, urls, args.requests, args.connections, settle_s=2)
                print(f"{label:<34} {kir[label]:8.1f}", flush=True)
            bare = kir[SCENARIOS[0][0]]
            print("\nadded per request, and the ceiling if Envoy's instructions alone set the pace (a / x):")
            for label, v in kir.items():
                if v is not kir[SCENARIOS[0][0]]:
                    print(f"  {label:<34} +{v - bare:6.1f} kIr   {bare / v:.2f}")
        finally:
            env.cleanup()
            srv.stop()


if __name__ == "__main__":
    main()
