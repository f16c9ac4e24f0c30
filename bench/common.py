"""Shared pieces of the benchmarks: load generators (wrk, hey), parsing, result tables.

Every benchmark runs its scenarios back to back in one run, through one Envoy with ``--concurrency 1``,
and prints each scenario's figures and its ratio against the baseline (Envoy without the extension).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadResult:
    """One load run: requests/s, latency percentiles in ms, non-2xx count."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    requests: int = 0


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in seconds (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(
    name: str,
    url: str,
    *,
    seconds: int = 8,
    connections: int = 32,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: str | None = None,
) -> LoadResult:
    """Closed-loop maximum throughput with wrk (``--latency`` for percentiles); ``script``: a wrk
    Lua file (``-s``), e.g. to mix request paths."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", url]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if script is not None:
        cmd += ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return LoadResult(name, rps, p50, p99, int(non2xx.group(1)) if non2xx else 0, total)


def hey_rate(
    name: str,
    url: str,
    rps: float,
    *,
    seconds: int = 6,
    workers: int = 8,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Open-ish loop at a fixed total rate with hey (``-q`` per worker), for latency at partial load."""
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed (apt-get install hey)")
    per_worker = max(1, int(rps / workers))
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(per_worker)]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    got = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = float(re.search(r"50%+ in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    p99 = float(re.search(r"99%+ in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    errors = sum(int(n) for c, n in codes.items() if not c.startswith("2"))
    return LoadResult(name, got, p50, p99, errors, sum(int(n) for n in codes.values()))


def table(results: list[LoadResult], baseline: LoadResult) -> str:
    """Render results with ratios against ``baseline``'s requests/s."""
    rows = [f"{'scenario':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'ratio':>6}"]
    for r in results:
        rows.append(
            f"{r.name:<44} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>8} {r.rps / baseline.rps:>6.2f}"
        )
    return "\n".join(rows)
