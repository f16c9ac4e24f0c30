"""A PATH without any C compiler, to check what a fresh machine with only ``pip install`` can build."""

from __future__ import annotations

import os
import re
from pathlib import Path

_COMPILER = re.compile(r"^(clang|gcc|g\+\+|c\+\+|cc|tcc|wasm-ld|ld\.lld|lld)([-.\d].*)?$")


def path_without_c_compilers(tmp: Path) -> str:
    """A PATH value: every directory of the current PATH mirrored into ``tmp`` as symlinks, minus
    clang, gcc, cc and the wasm linkers (system directories mix compilers with tools we need)."""
    shadow = tmp / "bin-without-cc"
    shadow.mkdir(parents=True, exist_ok=True)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            link = shadow / entry.name
            if _COMPILER.match(entry.name) or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry.path)
    return str(shadow)
