"""pytest fixture building the example filters: ``-p envoykit.wasmbuild.pytest_plugin``.

- ``wasm_example`` (session): ``wasm_example("add_header")`` → path of the built example; skips the test
  with the reason when a toolchain (a C compiler, npm) is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from envoykit.wasmbuild.build import BuildError, build_example


@pytest.fixture(scope="session")
def wasm_example() -> Callable[[str], Path]:
    """Build an example filter from ``examples/wasm`` (cached by source hash)."""

    def build(name: str) -> Path:
        try:
            return build_example(name)
        except BuildError as exc:
            text = str(exc)
            if "not installed" in text or ("npm" in text and "install" in text):
                pytest.skip(f"cannot build {name}: {text.splitlines()[0]}")
            raise

    return build
