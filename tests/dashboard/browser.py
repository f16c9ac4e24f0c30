"""A real headless browser for the dashboard tests: Debian's chromium driven by Playwright's Python client.

``playwright install`` downloads its own browsers, which this machine cannot; Debian's ``chromium``
(installed by ``.ci/run``) is launched instead. Tests skip, saying why, when either is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
#: screenshots the tests save (build/ is ignored by git); CI keeps the folder as an artifact
ARTIFACTS = REPO / "build" / "test-artifacts"


def chromium_path() -> str | None:
    """Debian's chromium, or one on PATH."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python client is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
    return None


@contextmanager
def page(width: int = 1500, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless chromium, with page errors collected in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.errors = errors  # type: ignore[attr-defined]  # the page's JS errors ride along to the test
            yield pg
        finally:
            browser.close()


def needs_browser() -> pytest.MarkDecorator:
    """``skipif`` with the reason of :func:`skip_reason`."""
    reason = skip_reason()
    return pytest.mark.skipif(reason is not None, reason=reason or "")
