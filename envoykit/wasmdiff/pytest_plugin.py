"""pytest fixture of the differential check: ``-p envoykit.wasmdiff.pytest_plugin``.

- ``wasm_diff``: ``wasm_diff(wasm, cases_yaml)`` → a :class:`~envoykit.wasmdiff.DiffReport` from the host
  and a real Envoy run; skips when no Envoy binary is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envoykit.wasmdiff import envoy_missing, run_diff


@pytest.fixture
def wasm_diff(tmp_path: Path) -> Callable[..., Any]:
    """Run a cases file in the host and in a real Envoy; returns the report."""
    reason = envoy_missing()
    if reason:
        pytest.skip(reason)

    def diff(wasm: str | Path, cases: Any) -> Any:
        return run_diff(wasm, cases, workdir=tmp_path / "envoy")

    return diff
