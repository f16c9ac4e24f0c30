"""Click options every long-running server shares: ``--grace``, ``--nice`` and ``--log-level``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = ("debug", "info", "warning", "error")


def process_options(nice_help: str) -> Callable[[F], F]:
    """``--grace SECONDS`` (drain time on SIGTERM, default 5.0), ``--nice 0-19`` (CPU priority,
    default 0; ``nice_help`` says why this server offers it) and ``--log-level``, passed as ``grace``,
    ``nice`` and ``log_level``."""

    def apply(f: F) -> F:
        f = click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)(f)
        f = click.option("--nice", type=click.IntRange(0, 19), default=0, show_default=True, help=nice_help)(
            f
        )
        return click.option(
            "--grace", type=float, default=5.0, show_default=True, help="Drain time on SIGTERM, seconds."
        )(f)

    return apply
