"""Every code block of README.md and docs/*.md marked runnable runs, so the docs cannot drift.

A block is marked by the word ``runnable`` after its language: ```` ```sh runnable ```` or
```` ```python runnable ```` (renderers show it as plain sh/python). Each block runs on its own, in a
fresh folder that links the repository's ``examples/`` and ``envoy/``, with the venv's ``envoykit``
and ``envoy`` first on PATH: shell blocks under ``bash -e -o pipefail``, Python blocks as a script,
after which every argument-less ``test_*`` function the block defines is called (so a documented
test runs too). A block fails the test by exiting non-zero.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>sh|bash|python) runnable[ \t]*$")
_CALL_TESTS = """
for _name, _fn in list(globals().items()):
    if _name.startswith("test_") and callable(_fn) and _fn.__code__.co_argcount == 0:
        _fn()
        print("passed:", _name)
"""


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def runnable_blocks(path: Path) -> list[Block]:
    """The blocks of ``path`` marked runnable, dedented by their fence's indentation."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start, body = m["indent"], i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        out.append(Block(path, start + 1, m["lang"], "\n".join(body) + "\n"))
        i += 1
    return out


BLOCKS = [b for f in FILES for b in runnable_blocks(f)]


def test_the_docs_mark_blocks_runnable() -> None:
    # the marker must not silently disappear from the docs that carry it
    marked = {b.file.name for b in BLOCKS}
    assert {"README.md", "control.md", "ratelimit.md", "authz.md", "identity.md"} <= marked, marked


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    for name in ("examples", "envoy"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ENVOYKIT_STATE_DIR", None)
    if block.lang == "python":
        script = tmp_path / "block.py"
        script.write_text(block.code + _CALL_TESTS)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{block.id} exited {proc.returncode}\n--- block ---\n{block.code}"
        f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    )
