"""pytest fixtures for testing Proxy-Wasm filters with :mod:`envoykit.wasmhost`.

Enable with ``-p envoykit.wasmhost.pytest_plugin`` on the command line, or in a top-level
``conftest.py``: ``pytest_plugins = ["envoykit.wasmhost.pytest_plugin"]``. Fixtures:

- ``wasm_host``: a fresh :class:`~envoykit.wasmhost.Host` (clock, shared data, metrics) per test;
- ``wasm_load``: ``wasm_load(path_or_module, configuration=..., root_id=...)`` → a started
  :class:`~envoykit.wasmhost.Plugin` in ``wasm_host``; closed (``proxy_on_done``) after the test;

The example builds (``wasm_example``) live in :mod:`envoykit.wasmbuild.pytest_plugin`, the differential
check (``wasm_diff``) in :mod:`envoykit.wasmdiff.pytest_plugin`. Compiled modules are cached (in memory
and on disk), so a session compiles each ``.wasm`` once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
