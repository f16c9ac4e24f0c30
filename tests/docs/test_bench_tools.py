"""`make bench` on a machine without its tools: one clear line, and .ci/run installs every tool it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_missing_tools_give_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "ratelimit", "wasmhost"],
        env={"PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines == [
        "make bench needs wrk, hey, redis-server, npm: run .ci/run, or apt-get install wrk hey redis-server npm"
    ]


def test_ci_run_installs_what_bench_needs() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import run  # bench/run.py
    finally:
        sys.path.pop(0)
    ci = (REPO / ".ci" / "run").read_text()
    for tool in sorted({t for tools in run.TOOLS.values() for t in tools}):
        assert f"command -v {tool} " in ci, f".ci/run does not install {tool}"
