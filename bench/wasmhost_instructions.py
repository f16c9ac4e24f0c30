"""Benchmark: the host's instructions per case of ``bench/wasmhost.py``'s suite (callgrind), the noise-free figure.

Wall and CPU time per case move by tens of percent on the shared machine; the instructions the
process executes do not. The suite's 1,000-case mix (:func:`wasmhost.suite_cases`) runs in the host
under callgrind twice, once with one round of new cases and once with three (every round its own
request objects, all of them built in both runs, so both hold the same objects); the difference
divided by the 2,000 extra cases is the steady-state cost of a case (Python, ctypes, wasmtime and the
filter's own code), without start-up, compilation or the cases' construction.

Run: ``.venv/bin/python bench/wasmhost_instructions.py`` (needs valgrind; about a minute).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from wasmhost import CONFIG, suite_cases

from envoykit.wasmbuild.build import build_example
from envoykit.wasmhost import load_plugin, run_exchange

ROUNDS = (1, 3)  # rounds run in the two measured processes
CASES = 1000


def child(rounds: int) -> None:
    """Run ``rounds`` rounds of the suite in the host (the process callgrind measures)."""
    plugin = load_plugin(build_example("add_header"), root_id="add_header", configuration=CONFIG)
    built = [suite_cases(CASES, f"/round{r}") for r in range(max(ROUNDS) + 1)]
    for case in built[0][:50]:  # warm-up: the first calls fill caches of the host and of wasmtime
        run_exchange(plugin, case.request, case.upstream)
    for r in range(1, rounds + 1):
        for case in built[r]:
            run_exchange(plugin, case.request, case.upstream)


def instructions(tmp: Path, rounds: int) -> int:
    """Instructions the whole child process executed for ``rounds`` rounds."""
    out = tmp / f"callgrind.{rounds}"
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in both runs
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--child", str(rounds)],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M)
    if m is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(m.group(1))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    build_example("add_header")  # built before the measured runs
    with tempfile.TemporaryDirectory() as tmp:
        low, high = (instructions(Path(tmp), r) for r in ROUNDS)
    per_case = (high - low) / ((ROUNDS[1] - ROUNDS[0]) * CASES)
    print(
        f"host, {CASES}-case suite mix (add_header): {per_case / 1000:.1f}k instructions per case (callgrind)"
    )


if __name__ == "__main__":
    main()
