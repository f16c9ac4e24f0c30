"""C filters build with the compiler envoykit's own install brings (zig cc from the ziglang wheel),
with no system C compiler, and run as a system clang's build does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envoykit.wasmbuild.build import build_dir, build_example, c_compiler
from envoykit.wasmdiff.cases import load_cases
from envoykit.wasmdiff.host_side import run_case, start_plugin
from envoykit.wasmhost import HttpRequest, HttpResponse, load_plugin, run_exchange
from tests.wasmhost.conftest import CASES
from tests.wasmhost.toolchain import path_without_c_compilers

REPO = Path(__file__).resolve().parents[2]
C_CASES = [("add_header", "add_header"), ("deny", "deny"), ("counter", "counter"), ("callout", "callout"),
           ("shared_state", "shared_state"), ("inspect", "inspect"), ("body_limit", "body_limit")]  # fmt: skip


@pytest.mark.timeout(900)  # zig compiles its wasi-libc on first use: a minute, more on a busy machine
def test_zig_builds_the_demo_filter_without_a_system_compiler(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", path_without_c_compilers(tmp_path))
    monkeypatch.delenv("CLANG", raising=False)
    assert shutil.which("clang") is None and shutil.which("cc") is None
    assert Path(c_compiler()[0]).name == "zig"
    wasm = build_example("add_header", out_dir=tmp_path / "build")
    plugin = load_plugin(wasm, root_id="add_header", configuration="x-mesh: envoykit")
    out = run_exchange(plugin, HttpRequest(), HttpResponse(body=b"hi"))
    assert (out.status, out.headers["x-mesh"], out.body) == (200, "envoykit", b"hi")


@pytest.mark.skipif(shutil.which("clang") is None, reason="no system clang to compare with")
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("example", "cases"), C_CASES)
def test_clang_and_zig_builds_answer_alike(monkeypatch, example, cases):
    """zig's modules are diffed against Envoy in test_examples_vs_envoy; clang's must match them."""
    case_file = load_cases(CASES / f"{cases}.yaml")
    zig = build_example(example)
    monkeypatch.setenv("CLANG", shutil.which("clang") or "clang")
    clang = build_example(example, out_dir=build_dir() / "clang")
    assert zig.read_bytes() != clang.read_bytes()  # two different compilers did build them

    def observe(wasm):
        plugin = start_plugin(wasm, case_file)
        return [run_case(plugin, c, case_file) for c in case_file.cases], plugin.log_messages()

    assert observe(zig) == observe(clang)


@pytest.mark.envoy
@pytest.mark.timeout(900)
def test_validate_builds_the_demo_filter_on_a_fresh_clone(tmp_path) -> None:
    """`envoykit validate examples/mesh.yaml` before any `envoykit up`: the module is built (with
    zig, no system compiler on PATH) where up builds it, then Envoy validates the config."""
    mesh = tmp_path / "mesh.yaml"
    shutil.copyfile(REPO / "examples" / "mesh.yaml", mesh)
    path = os.pathsep.join([str(Path(sys.executable).parent), path_without_c_compilers(tmp_path)])
    env = dict(os.environ, PATH=path, ENVOYKIT_WASM_BUILD=str(tmp_path / "build"))
    env.pop("CLANG", None)
    done = subprocess.run([sys.executable, "-m", "envoykit.cli", "validate", str(mesh)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "envoy --mode validate ok" in done.stdout
    assert (tmp_path / "wasm" / "add_header.wasm").stat().st_size > 0
