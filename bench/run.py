"""Run every benchmark one after the other (``make bench``); each prints its own figures and ratios.

Usage: ``python bench/run.py [authz ratelimit extproc wasmhost control mesh]`` (default: all).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = ["authz", "ratelimit", "extproc", "wasmhost", "control", "mesh"]


def main() -> int:
    names = sys.argv[1:] or ALL
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
