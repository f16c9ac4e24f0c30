"""Watched configuration with keep-last-good reload.

A :class:`WatchedConfig` holds the current parsed and validated version of a file or directory.
When the files change it loads the new version in full; only if loading succeeds does it swap the
reference (one assignment, so requests in flight keep the version they started with). A failed load
keeps the last good version, is logged with the file and line, and is counted in
``envoykit_config_reloads_total{component, result="error"}``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

from envoykit.core.errors import ConfigError
from envoykit.core.logs import get_logger

T = TypeVar("T")

RELOADS = Counter(
    "envoykit_config_reloads",
    "Configuration loads by component and result (success, error).",
    ["component", "result"],
)
CONFIG_OK = Gauge(
    "envoykit_config_last_load_ok",
    "1 when the last load of the component's configuration succeeded, 0 when it was refused.",
    ["component"],
)


class WatchedConfig(Generic[T]):
    """A configuration loaded by ``loader(path)`` and reloaded when files under ``path`` change.

    Args:
        component: name used in logs and metrics (``authz``, ``ratelimit``, ...).
        path: a file or a directory.
        loader: parses and validates everything under ``path``; raises :class:`ConfigError`
            (or any exception, reported as-is) when the new version cannot be used.
        on_change: called with the new value after each successful swap.

    The first load happens in the constructor and raises on failure: a server must not start
    without a good configuration.
    """

    def __init__(
        self,
        component: str,
        path: str | Path,
        loader: Callable[[Path], T],
        on_change: Callable[[T], None] | None = None,
    ) -> None:
        self.component = component
        self.path = Path(path)
        self._loader = loader
        self._on_change = on_change
        self._log = get_logger(component)
        self.last_error: str | None = None
        self.generation = 0
        self._lock = threading.Lock()
        self._current: T = loader(self.path)
        RELOADS.labels(component, "success").inc()
        CONFIG_OK.labels(component).set(1)

    @property
    def current(self) -> T:
        """The last version that loaded and validated."""
        return self._current

    def reload(self) -> bool:
        """Load again now; swap in the result only on success.

        Returns:
            True when the new version replaced the old one, False when it was refused.
        """
        with self._lock:
            try:
                value = self._loader(self.path)
            except ConfigError as exc:
                return self._refuse(str(exc))
            except Exception as exc:  # a loader bug must not take the server down either
                return self._refuse(f"{self.path}: {type(exc).__name__}: {exc}")
            self._current = value
            self.generation += 1
            self.last_error = None
            RELOADS.labels(self.component, "success").inc()
            CONFIG_OK.labels(self.component).set(1)
            self._log.info("config reloaded", path=str(self.path), generation=self.generation)
        if self._on_change is not None:
            self._on_change(value)
        return True

    def _refuse(self, error: str) -> bool:
        self.last_error = error
        RELOADS.labels(self.component, "error").inc()
        CONFIG_OK.labels(self.component).set(0)
        self._log.error("config refused, keeping last good version", error=error)
        return False

    def watch_in_thread(self, stop: threading.Event, debounce_ms: int = 100) -> threading.Thread:
        """Reload on every change under ``path`` from a daemon thread until ``stop`` is set."""
        from watchfiles import watch

        target = self.path if self.path.is_dir() else self.path.parent

        def loop() -> None:
            for changes in watch(
                target, stop_event=stop, debounce=debounce_ms, recursive=True, rust_timeout=500
            ):
                if self.path.is_file() and not any(Path(p) == self.path for _, p in changes):
                    continue
                self.reload()

        t = threading.Thread(target=loop, daemon=True, name=f"{self.component}-watch")
        t.start()
        return t

    async def watch(self, stop: asyncio.Event | None = None, debounce_ms: int = 100) -> None:
        """Reload on every change under ``path`` until ``stop`` is set (uses watchfiles)."""
        from watchfiles import awatch

        target = self.path if self.path.is_dir() else self.path.parent
        async for changes in awatch(target, stop_event=stop, debounce=debounce_ms, recursive=True):
            if self.path.is_file() and not any(Path(p) == self.path for _, p in changes):
                continue
            await asyncio.to_thread(self.reload)
