"""pytest fixtures for testing Proxy-Wasm filters with :mod:`envoykit.wasmhost`.

Enable with ``-p envoykit.wasmhost.pytest_plugin`` on the command line, or in a top-level
``conftest.py``: ``pytest_plugins = ["envoykit.wasmhost.pytest_plugin"]``. Fixtures:

- ``wasm_host``: a fresh :class:`~envoykit.wasmhost.Host` (clock, shared data, metrics) per test;
- ``wasm_load``: ``wasm_load(path_or_module, configuration=..., root_id=...)`` → a started
  :class:`~envoykit.wasmhost.Plugin` in ``wasm_host``; closed (``proxy_on_done``) after the test;
- ``wasm_example`` (session): ``wasm_example("add_header")`` → path of the built example;
  skips the test with the reason when a toolchain (a C compiler, npm) is missing;
- ``wasm_diff``: ``wasm_diff(wasm, cases_yaml)`` → a :class:`~envoykit.wasmdiff.DiffReport`
  from a real Envoy run; skips when no Envoy binary is installed.

Compiled modules are cached (in memory and on disk), so a session compiles each ``.wasm`` once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envoykit.wasmhost.host import Host
from envoykit.wasmhost.plugin import Plugin


@pytest.fixture
def wasm_host() -> Host:
    """A fresh host per test."""
    return Host()


@pytest.fixture
def wasm_load(wasm_host: Host) -> Iterator[Callable[..., Plugin]]:
    """Load and start plugins into ``wasm_host``; they are shut down after the test."""
    loaded: list[Plugin] = []

    def load(module: Any, **kwargs: Any) -> Plugin:
        plugin = wasm_host.load(module, **kwargs)
        loaded.append(plugin)
        return plugin

    yield load
    for plugin in loaded:
        if not plugin.failed and not plugin.closed:
            plugin.close()


@pytest.fixture(scope="session")
def wasm_example() -> Callable[[str], Path]:
    """Build an example filter from ``examples/wasm`` (cached by source hash)."""
    from envoykit.wasmhost.build import BuildError, build_example

    def build(name: str) -> Path:
        try:
            return build_example(name)
        except BuildError as exc:
            text = str(exc)
            if "not installed" in text or ("npm" in text and "install" in text):
                pytest.skip(f"cannot build {name}: {text.splitlines()[0]}")
            raise

    return build


@pytest.fixture
def wasm_diff(tmp_path: Path) -> Callable[..., Any]:
    """Run a cases file in the host and in a real Envoy; returns the report."""
    from envoykit.wasmdiff import envoy_missing, run_diff

    reason = envoy_missing()
    if reason:
        pytest.skip(reason)

    def diff(wasm: str | Path, cases: Any) -> Any:
        return run_diff(wasm, cases, workdir=tmp_path / "envoy")

    return diff
