"""Fixtures of the Wasm host tests: the public pytest plugin's, plus WAT module loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from envoykit.wasmbuild.build import examples_dir
from envoykit.wasmbuild.pytest_plugin import wasm_example  # noqa: F401
from envoykit.wasmdiff.pytest_plugin import wasm_diff  # noqa: F401
from envoykit.wasmhost.plugin import Plugin
from envoykit.wasmhost.pytest_plugin import wasm_host, wasm_load  # noqa: F401

WAT = examples_dir() / "wat"
CASES = Path(__file__).parent / "cases"
RESULTS = 256  # the WAT modules store u32 results at 256 + 4*i


def slot(plugin: Plugin, i: int) -> int:
    """Result slot ``i`` written by a WAT module."""
    return plugin.vm.read_u32(RESULTS + 4 * i)


@pytest.fixture
def wat(wasm_load: Callable[..., Plugin]) -> Callable[..., Plugin]:  # noqa: F811 (the imported fixture)
    """Load ``examples/wasm/wat/<name>.wat`` into the test's host."""

    def load(name: str, **kwargs: object) -> Plugin:
        return wasm_load(WAT / f"{name}.wat", **kwargs)

    return load
