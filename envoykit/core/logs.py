"""Structured logs: one JSON object per line on stderr (or key=value text for a terminal)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        json: JSON lines when true; console rendering when false; by default JSON unless stderr
            is a terminal.
    """
    global _configured
    if json is None:
        json = not sys.stderr.isatty()
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s", force=True)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # its per-change lines are not JSON
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str, **bound: Any) -> Any:
    """Return a structlog logger bound to ``component=name`` and any extra key/values.

    The logger stays lazy until first use, so module-level loggers pick up :func:`configure_logging`
    even when it runs after the import.
    """
    return structlog.get_logger(component=name, **bound)
