"""Watched configuration with keep-last-good reload.

A :class:`WatchedConfig` holds the current parsed and validated version of a file or directory.
When the files change it waits for them to *settle* (their contents unchanged over ``settle_ms``),
loads the new version in full, and checks that the files did not change while it loaded; only then
does it swap the reference (one assignment, so requests in flight keep the version they started with).
A file caught half-written (truncated, or written in parts) is therefore never loaded as long as the
writer's pauses are shorter than ``settle_ms``. A failed load keeps the last good version, is logged
with the file and line, and is counted in ``envoykit_config_reloads_total{component, result="error"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
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


def names_path(changes: Iterable[tuple[object, str]], path: str | Path) -> bool:
    """True when one of watchfiles' ``changes`` (``(Change, path)`` pairs) is about ``path``.

    watchfiles reports absolute paths (canonical ones on some systems) while ``path`` may be relative
    (``envoykit control serve mesh.yaml``), so both sides are compared as absolute and as real paths.
    """
    wanted = {os.path.abspath(path), os.path.realpath(path)}
    return any(os.path.abspath(p) in wanted or os.path.realpath(p) in wanted for _, p in changes)


class WatchedConfig(Generic[T]):
    """A configuration loaded by ``loader(path)`` and reloaded when files under ``path`` change.

    Args:
        component: name used in logs and metrics (``authz``, ``ratelimit``, ...).
        path: a file or a directory.
        loader: parses and validates everything under ``path``; raises :class:`ConfigError`
            (or any exception, reported as-is) when the new version cannot be used.
        on_change: called with the new value after each successful swap.
        settle_ms: a reload starts only once the files' contents stayed the same this long (ms), and
            is retried when they changed while loading; ``0`` loads at once.
        settle_max_s: a reload whose files keep changing for longer than this (s) is refused.

    The first load happens in the constructor and raises on failure: a server must not start
    without a good configuration.
    """

    def __init__(
        self,
        component: str,
        path: str | Path,
        loader: Callable[[Path], T],
        on_change: Callable[[T], None] | None = None,
        *,
        settle_ms: float = 250.0,
        settle_max_s: float = 10.0,
    ) -> None:
        self.component = component
        self.settle_s = settle_ms / 1000
        self.settle_max_s = settle_max_s
        self.path = Path(path)
        self._loader = loader
        self._on_change = on_change
        self._log = get_logger(component)
        self.last_error: str | None = None
        self.last_refused_at: float | None = None  # time.time() of the last refusal
        self.generation = 0
        self._lock = threading.Lock()
        self._loaded_target = os.path.realpath(self.path)
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
            self._loaded_target = os.path.realpath(self.path)
            try:
                value = self._load_settled()
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

    def update(self, derive: Callable[[T], T | None]) -> bool:
        """Swap in ``derive(current)``, a change made from the current value without loading the files
        again (the control plane's endpoint-only road); ``None`` keeps the current one. Runs under the
        reload lock, so a reload and an update never interleave; ``on_change`` follows as for a reload.

        Returns:
            True when a new value replaced the current one.
        """
        with self._lock:
            value = derive(self._current)
            if value is None:
                return False
            self._current = value
            self.generation += 1
            if self._on_change is not None:
                self._on_change(value)  # in order with the swap (it only schedules the push)
        return True

    def _fingerprint(self) -> dict[str, str]:
        """sha256 of every file under ``path`` (symlinks to files followed, as the loader reads them)."""
        files = [str(self.path)] if not self.path.is_dir() else []
        if self.path.is_dir():
            for root, _dirs, names in os.walk(self.path):
                files.extend(os.path.join(root, n) for n in names)
        out: dict[str, str] = {}
        for f in sorted(files):
            try:
                with open(f, "rb") as fh:
                    out[f] = hashlib.sha256(fh.read()).hexdigest()
            except OSError as exc:  # vanished between listing and reading: still a change to wait out
                out[f] = f"<{exc.errno}>"
        return out

    def _load_settled(self) -> T:
        """Wait until the files stop changing, load, and load again if they changed meanwhile."""
        if self.settle_s <= 0:
            return self._loader(self.path)
        deadline = time.monotonic() + self.settle_max_s
        seen = self._fingerprint()
        while True:
            time.sleep(self.settle_s)
            now = self._fingerprint()
            if now == seen:
                value = self._loader(self.path)
                seen = self._fingerprint()
                if seen == now:
                    return value
            else:
                seen = now
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"files kept changing for {self.settle_max_s:g} s; not loaded", file=str(self.path)
                )

    def _refuse(self, error: str) -> bool:
        self.last_error = error
        self.last_refused_at = time.time()
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
                if self.path.is_file() and not names_path(changes, self.path):
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
            # a file mounted from a ConfigMap is a symlink through ``..data``, which the kubelet swaps
            # to a new folder: no event names the file, but it now resolves elsewhere
            moved = os.path.realpath(self.path) != self._loaded_target
            if self.path.is_file() and not moved and not names_path(changes, self.path):
                continue
            await asyncio.to_thread(self.reload)
