"""Build the example filters in ``examples/wasm/`` into a cache directory, only when sources change.

- ``c/<name>.c`` for ``wasm32-wasi`` (reactor) with the C compiler :func:`c_compiler` picks: ``zig cc``
  from the ``ziglang`` wheel envoykit installs (it brings its own clang, wasm-ld and wasi-libc, so
  a fresh machine needs no system compiler), else a system ``clang`` with lld and wasi-libc;
- ``assemblyscript/assembly/<name>.ts`` with the pinned ``assemblyscript`` and
  ``@solo-io/proxy-runtime`` (``npm install`` into ``assemblyscript/node_modules`` on first use);
- ``wat/<name>.wat`` converted to binary (Envoy loads only binary modules).

Example names are the file stems; AssemblyScript ones are prefixed ``as_`` and WAT ones ``wat_``
(``build_example("as_add_header")``). For the local mesh::

    from envoykit.wasmbuild.build import build_example
    path = build_example("add_header")   # C filter, root_id "add_header", config "name: value" lines
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import wasmtime

AS_PREFIX = "as_"
WAT_PREFIX = "wat_"
# asc without -O: 2 s per filter instead of 13 s with -O3 on a loaded 2-core machine; behaviour is
# the same, and filters here are built to be tested, not shipped. Override with $ENVOYKIT_ASC_FLAGS.
ASC_FLAGS = os.environ.get("ENVOYKIT_ASC_FLAGS", "--use abort=abort_proc_exit").split()
CLANG_FLAGS = [
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-O2",
    "-Wl,--strip-debug",  # zig's wasi-libc carries ~900 KB of DWARF; function names stay for traps
    "-Wl,--export=malloc",
    "-Wl,--export=free",
]


class BuildError(Exception):
    """A compiler is missing or failed; ``output`` holds its messages."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(f"{message}\n{output[-3000:]}" if output else message)
        self.output = output


def examples_dir() -> Path:
    """``$ENVOYKIT_WASM_EXAMPLES`` or the repository's ``examples/wasm``."""
    env = os.environ.get("ENVOYKIT_WASM_EXAMPLES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "examples" / "wasm"


def build_dir() -> Path:
    """``$ENVOYKIT_WASM_BUILD`` or ``<repo>/.envoykit/build/wasm`` (gitignored)."""
    env = os.environ.get("ENVOYKIT_WASM_BUILD")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".envoykit" / "build" / "wasm"


def list_examples() -> list[str]:
    """Every example name that :func:`build_example` accepts."""
    root = examples_dir()
    names = [p.stem for p in sorted((root / "c").glob("*.c"))]
    names += [AS_PREFIX + p.stem for p in sorted((root / "assemblyscript" / "assembly").glob("*.ts"))]
    names += [WAT_PREFIX + p.stem for p in sorted((root / "wat").glob("*.wat"))]
    return names


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def build_example(name: str, *, out_dir: str | Path | None = None) -> Path:
    """Build example ``name`` (if its sources changed) and return the ``.wasm`` path.

    Raises:
        BuildError: unknown example, compiler missing, compile failure, or npm unreachable.
    """
    root = examples_dir()
    out = Path(out_dir) if out_dir is not None else build_dir()
    out.mkdir(parents=True, exist_ok=True)
    if name.startswith(AS_PREFIX):
        src = root / "assemblyscript" / "assembly" / f"{name[len(AS_PREFIX) :]}.ts"
        deps = [src, root / "assemblyscript" / "package.json", *sorted(src.parent.glob("_*.ts"))]
        builder = _build_assemblyscript
    elif name.startswith(WAT_PREFIX):
        src = root / "wat" / f"{name[len(WAT_PREFIX) :]}.wat"
        deps = [src]
        builder = _build_wat
    else:
        src = root / "c" / f"{name}.c"
        deps = [src, *sorted(src.parent.glob("*.h"))]
        builder = _build_c
    if not src.exists():
        raise BuildError(f"no example {name!r} (known: {', '.join(list_examples())})")
    if name.startswith(AS_PREFIX):
        flags = " ".join(ASC_FLAGS)
    elif name.startswith(WAT_PREFIX):
        flags = ""
    else:
        flags = " ".join([_compiler_id(), *CLANG_FLAGS])
    target = out / f"{name}-{_digest(deps, name + flags)}.wasm"
    if target.exists():
        return target
    # One builder at a time (test workers, other sessions): npm install must not run twice at once.
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        builder(src, tmp)
        os.replace(tmp, target)
    for stale in out.glob(f"{name}-*.wasm"):
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def _run(
    cmd: list[str], cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> None:
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    except FileNotFoundError as exc:
        raise BuildError(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{' '.join(cmd[:3])} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:3])}... failed ({proc.returncode})", proc.stdout + proc.stderr)


def c_compiler() -> list[str]:
    """The command that compiles C to ``wasm32-wasi``, with the compiler's name first.

    In order: ``$CLANG`` when set; ``zig cc`` from the ``ziglang`` wheel (a dependency of envoykit,
    so ``pip install`` brings a compiler); a ``clang`` on PATH (it also needs lld and wasi-libc).
    Modules built by either run identically in the host and in Envoy (the C examples are diffed
    against Envoy with the one a test run picks).

    Raises:
        BuildError: none of them is there.
    """
    env = os.environ.get("CLANG")
    if env:
        return [env]
    try:
        import ziglang  # type: ignore[import-untyped]

        zig = Path(ziglang.__file__).parent / "zig"
        if zig.is_file():
            return [str(zig), "cc"]
    except ImportError:
        pass
    clang = shutil.which("clang")
    if clang:
        return [clang]
    raise BuildError(
        "no C compiler for wasm32-wasi: reinstall envoykit (it depends on the ziglang wheel) or "
        "install clang, lld and wasi-libc"
    )


def _compiler_id() -> str:
    """Which compiler builds C examples: part of the build cache key, so switching rebuilds."""
    cmd = c_compiler()
    return " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))


def zig_cache_env(zig: str) -> dict[str, str]:
    """Cache directories for one zig installation: ``~/.cache/envoykit/zig-<hash of its path>``.

    zig keeps its compiled wasi-libc in a cache (the first build takes a minute, later ones 0.1 s).
    Its default cache is shared by every zig on the machine, and two installations of the same
    version (two virtualenvs) rebuild each other's libc there in turn; one cache per installation
    keeps every build warm. ``$ZIG_GLOBAL_CACHE_DIR`` set by the user wins.
    """
    if os.environ.get("ZIG_GLOBAL_CACHE_DIR"):
        return {}
    tag = hashlib.sha256(str(Path(zig).resolve()).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "envoykit" / f"zig-{tag}"
    return {"ZIG_GLOBAL_CACHE_DIR": str(cache), "ZIG_LOCAL_CACHE_DIR": str(cache)}


def _build_c(src: Path, target: Path) -> None:
    cmd = c_compiler()
    env = zig_cache_env(cmd[0]) if Path(cmd[0]).name == "zig" else {}
    _run([*cmd, *CLANG_FLAGS, f"-I{src.parent}", "-o", str(target), str(src)], timeout=900, env=env)


def _build_wat(src: Path, target: Path) -> None:
    try:
        target.write_bytes(wasmtime.wat2wasm(src.read_text()))
    except wasmtime.WasmtimeError as exc:
        raise BuildError(f"{src.name} is not valid WAT", str(exc)) from exc


def npm_install(project: Path | None = None) -> float:
    """``npm install`` the pinned AssemblyScript toolchain if missing; returns seconds spent (0 if present).

    Raises:
        BuildError: npm missing, or the registry unreachable.
    """
    project = project or examples_dir() / "assemblyscript"
    if (project / "node_modules" / "assemblyscript" / "bin" / "asc").exists() and (
        project / "node_modules" / "@solo-io" / "proxy-runtime"
    ).exists():
        return 0.0
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm is not installed (needed for the AssemblyScript examples)")
    start = time.monotonic()
    _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=project, timeout=600)
    return time.monotonic() - start


def _build_assemblyscript(src: Path, target: Path) -> None:
    project = src.parent.parent
    npm_install(project)
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not installed (needed for the AssemblyScript examples)")
    asc = project / "node_modules" / "assemblyscript" / "bin" / "asc"
    rel = src.relative_to(project)
    _run(
        [node, str(asc), str(rel), "-b", str(target.resolve()), "--use", "abort=abort_proc_exit", "-O3"],
        cwd=project,
    )
