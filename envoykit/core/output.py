"""Output a script can read: the ``-o text|json|yaml`` option every listing command shares.

JSON and YAML carry the same document; times are ISO 8601 strings in UTC (``2026-12-03T09:20:00Z``),
never epoch floats; the text form stays for people.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import yaml

from envoykit.core.errors import ConfigError
from envoykit.core.logs import configure_logging

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("text", "json", "yaml")


def output_option(formats: tuple[str, ...] = FORMATS) -> Callable[[F], F]:
    """The ``-o/--output FORMAT`` click option (default ``text``), passed as ``output``.

    A machine format sends logs (warnings and up) to stderr, so stdout holds the document only.
    """

    def quiet_logs(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if value != "text":
            configure_logging("warning")
        return value

    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(formats),
        default="text",
        show_default=True,
        callback=quiet_logs,
        help="Output format: " + ", ".join(formats) + ".",
    )


def iso_time(epoch_s: float | None) -> str | None:
    """Seconds since the epoch → ISO 8601 in UTC with a ``Z`` (None stays None)."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def dumps(doc: Any, fmt: str) -> str:
    """``doc`` as ``json`` (indented) or ``yaml`` (key order kept).

    Raises:
        ValueError: an unknown format.
    """
    plain = json.loads(json.dumps(doc, default=_default))  # one normal form for both
    if fmt == "json":
        return json.dumps(plain, indent=2) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
    raise ValueError(f"unknown output format {fmt!r}")


def emit(doc: Any, fmt: str) -> None:
    """Print ``doc`` on stdout in ``fmt`` (json or yaml)."""
    click.echo(dumps(doc, fmt), nl=False)


def error_doc(exc: Exception) -> dict[str, Any]:
    """An error as ``{file, line, field, message}`` (the parts a :class:`ConfigError` knows)."""
    if isinstance(exc, ConfigError):
        hint = getattr(exc, "hint", "")  # advice some loaders add after the message
        return {"file": exc.file, "line": exc.line, "field": exc.field, "message": exc.message + hint}
    return {"file": None, "line": None, "field": None, "message": str(exc)}
