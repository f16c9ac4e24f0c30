"""Run every benchmark one after the other (``make bench``); each prints its own figures and ratios.

Usage: ``python bench/run.py [authz authz_instructions authz_server_instructions ratelimit ratelimit_instructions transport extproc telemetry telemetry_instructions wasmhost wasmhost_instructions control mesh]``
(default: all).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = [
    "authz",
    "authz_instructions",
    "authz_server_instructions",
    "ratelimit",
    "ratelimit_instructions",
    "transport",
    "extproc",
    "telemetry",
    "telemetry_instructions",
    "wasmhost",
    "wasmhost_instructions",
    "control",
    "mesh",
]
# the programs each benchmark runs (.ci/run installs them); checked before anything starts
TOOLS = {
    "authz": ["wrk", "hey"],
    "authz_instructions": ["hey", "valgrind"],
    "authz_server_instructions": ["hey", "valgrind"],
    "ratelimit": ["wrk", "hey", "redis-server"],
    "ratelimit_instructions": ["hey", "valgrind"],
    "transport": ["wrk"],
    "extproc": ["wrk", "hey"],
    "telemetry": ["wrk"],
    "telemetry_instructions": ["hey", "valgrind"],
    "wasmhost": ["npm"],  # C filters build with zig from the ziglang wheel; AssemblyScript needs npm
    "wasmhost_instructions": ["valgrind"],
    "control": [],
    "mesh": ["wrk"],
}
# Debian package of each tool, for the one line that says what to install
PACKAGE = {"redis-server": "redis-server", "npm": "npm"}


def missing_tools(names: list[str]) -> list[str]:
    """The tools the benchmarks ``names`` need that are not on PATH (each once, in order)."""
    need = dict.fromkeys(t for n in names for t in TOOLS.get(n, []))
    return [t for t in need if shutil.which(t) is None]


def main() -> int:
    names = sys.argv[1:] or ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {' '.join(ALL)}", file=sys.stderr)
        return 2
    missing = missing_tools(names)
    if missing:
        pkgs = " ".join(dict.fromkeys(PACKAGE.get(t, t) for t in missing))
        print(
            f"make bench needs {', '.join(missing)}: run .ci/run, or apt-get install {pkgs}", file=sys.stderr
        )
        return 2
    failed = []
    for name in names:
        print(f"\n=== bench/{name}.py ===", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent)
        print(f"--- {name}: exit {rc} in {time.monotonic() - start:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
