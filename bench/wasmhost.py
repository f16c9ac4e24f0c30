"""Benchmark of the Proxy-Wasm host (``envoykit.wasmhost``). Prints:

1. per-request cost of a full HTTP lifecycle (request headers, response headers and body, on_log,
   on_done, on_delete) in the host for the add-header filter (C and AssemblyScript), in µs;
2. module load: compile from scratch, from the on-disk compiled cache, from the in-process cache,
   and starting a plugin (instantiate, on_vm_start, on_configure), in ms;
3. a 1,000-case suite run in the host against the same cases through a real Envoy (one request
   per case on its own connection, as a test would), alternately for a few rounds, wall and CPU
   time; then the differential check of the same cases (Envoy side with its log collection).

Usage: ``PATH=.venv/bin:$PATH .venv/bin/python bench/wasmhost.py [--cases 1000] [--requests 3000] [--rounds 5]``.
Numbers depend on the machine and its load; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import cpu_seconds

from envoykit.wasmbuild.build import build_example
from envoykit.wasmdiff import run_diff
from envoykit.wasmdiff.cases import Case, CaseFile
from envoykit.wasmdiff.envoy_side import EnvoyRunner, send_request
from envoykit.wasmhost import HttpRequest, HttpResponse, load_module, load_plugin, run_exchange
from envoykit.wasmhost.module import clear_memory_cache

CONFIG = "x-hello: world"


def lifecycle(example: str, n: int) -> float:
    """Median-of-3 µs per full request lifecycle through ``example``."""
    plugin = load_plugin(build_example(example), root_id="add_header", configuration=CONFIG)
    req = HttpRequest(path="/bench", headers=[("user-agent", "bench")])
    up = HttpResponse(200, [("content-type", "text/plain")], b"hello")
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            run_exchange(plugin, req, up)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    assert run_exchange(plugin, req, up).headers["x-hello"] == "world"
    return statistics.median(runs)


def module_load(example: str) -> dict[str, float]:
    """ms to get a compiled module: no cache, disk cache, memory cache; and to start a plugin."""
    wasm = build_example(example)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        load_module(wasm, use_cache=False)
        out["compile (no cache)"] = (time.perf_counter() - t0) * 1000
        clear_memory_cache()
        load_module(wasm, cache_dir=cache)  # fills the disk cache
        clear_memory_cache()
        t0 = time.perf_counter()
        module = load_module(wasm, cache_dir=cache)
        out["disk cache"] = (time.perf_counter() - t0) * 1000
        assert module.from_cache == "disk"
        t0 = time.perf_counter()
        module = load_module(wasm, cache_dir=cache)
        out["memory cache"] = (time.perf_counter() - t0) * 1000
        assert module.from_cache == "memory"
        t0 = time.perf_counter()
        load_plugin(module, root_id="add_header", configuration=CONFIG)
        out["start plugin"] = (time.perf_counter() - t0) * 1000
    return out


def suite_cases(n_cases: int, prefix: str = "/case") -> list[Case]:
    """The suite's mix: GET, POST and PUT in turn (the latter two with a small body), upstream
    200 or 201 with a body; every request its own path under ``prefix``."""
    cases = []
    for i in range(n_cases):
        method = ("GET", "POST", "PUT")[i % 3]
        body = b"" if method == "GET" else f"body {i}".encode()
        req = HttpRequest(method, f"{prefix}/{i}", headers=[("x-case", str(i))], body=body)
        cases.append(Case(f"case {i}", req, HttpResponse(200 + (i % 2), [("x-up", "1")], b"ok")))
    return cases


def suite(n_cases: int, rounds: int) -> None:
    """The same ``n_cases`` in the host and through Envoy, ``rounds`` times alternately.

    The Envoy side is a plain run of the requests (Envoy logging the filter's lines only, as in
    a test run; the differential check's ``http:debug`` end-of-case markers are off: they cost
    Envoy CPU per request that a suite would not pay). Besides wall time, CPU time is counted:
    the host process for the host; Envoy's process plus this process (the client and the
    scripted upstream) for the Envoy side.
    """
    wasm = build_example("add_header")
    cases = CaseFile(root_id="add_header", configuration=CONFIG)
    cases.cases.extend(suite_cases(n_cases))

    print(f"\n{n_cases}-case suite (add_header, one connection per case), {rounds} rounds alternating:")
    host_runs: list[tuple[float, float]] = []
    envoy_runs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as work:
        t_start = time.perf_counter()
        envoy = EnvoyRunner(wasm, cases, workdir=Path(work), collect_logs=False).__enter__()
        startup_s = time.perf_counter() - t_start
        assert envoy.envoy.proc is not None
        pid = envoy.envoy.proc.pid
        try:
            for _ in range(rounds):
                plugin = load_plugin(wasm, root_id="add_header", configuration=CONFIG)
                c0, t0 = time.process_time(), time.perf_counter()
                for case in cases.cases:
                    run_exchange(plugin, case.request, case.upstream)
                host_runs.append((time.perf_counter() - t0, time.process_time() - c0))

                e0, c0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
                for case in cases.cases:
                    envoy.upstream.answer = case.upstream
                    status, _, _ = send_request(envoy.port, case.request, 10)
                    assert status == case.upstream.status
                wall = time.perf_counter() - t0
                envoy_runs.append((wall, time.process_time() - c0 + cpu_seconds(pid) - e0))
        finally:
            envoy.__exit__(None, None, None)

    def us(x: float) -> str:
        return f"{x / n_cases * 1e6:7.1f}"

    for i, ((hw, hc), (ew, ec)) in enumerate(zip(host_runs, envoy_runs, strict=True)):
        print(f"  round {i + 1}: host {us(hw)} µs/case wall, {us(hc)} CPU | envoy {us(ew)} µs/case wall, "
              f"{us(ec)} CPU | ratio wall {ew / hw:5.1f}x, CPU {ec / hc:5.1f}x")  # fmt: skip
    best_h = min(w for w, _ in host_runs)
    best_e = min(w for w, _ in envoy_runs)
    print(f"  best of {rounds}: host {best_h:.3f} s, envoy {best_e:.3f} s (Envoy start-up excluded)")
    pairs = list(zip(host_runs, envoy_runs, strict=True))
    wall = statistics.median(ew / hw for (hw, _), (ew, _) in pairs)
    cpu = statistics.median(ec / hc for (_, hc), (_, ec) in pairs)
    print(f"  ratio, median of the rounds: host is {wall:.1f}x faster on request time (target 20x); "
          f"CPU per case {cpu:.1f}x; best against best {best_e / best_h:.1f}x")  # fmt: skip
    print(f"  with Envoy's start-up ({startup_s:.2f} s) counted: {(best_e + startup_s) / best_h:.1f}x")

    with tempfile.TemporaryDirectory() as work:
        report = run_diff(wasm, cases, workdir=work)
    assert report.ok, report.summary()
    print(f"  differential check of the same {n_cases} cases: all identical = {report.ok}; envoy side with")
    print(f"  log collection {report.envoy_seconds:.2f} s vs host {report.host_seconds:.3f} s "
          f"({report.envoy_seconds / report.host_seconds:.0f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("full HTTP lifecycle per request in the host (median of 3 runs):")
    for example in ("add_header", "as_add_header"):
        print(f"  {example:14} {lifecycle(example, args.requests):8.1f} µs")
    for example in ("add_header", "as_add_header"):
        print(f"\nmodule load, {example}:")
        for name, ms in module_load(example).items():
            print(f"  {name:20} {ms:8.2f} ms")
    suite(args.cases, args.rounds)


if __name__ == "__main__":
    main()
