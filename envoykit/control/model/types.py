"""Small value types shared by the mesh model: addresses, durations, string matches.

Durations are written as ``250ms``, ``2s``, ``1.5s``, ``1m`` or ``1h`` (or a bare number of seconds)
and held as float seconds. Addresses are written ``host:port`` and held as :class:`Address`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_serializer,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"250ms"`` → 0.25; ``"2s"``/``2`` → 2.0; ``"1m"`` → 60.0 (seconds).

    Raises:
        ValueError: not a non-negative number with an optional ``ms``/``s``/``m``/``h`` unit.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 250ms, 2s or 1m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if m is None:
        raise ValueError(f"expected a duration like 250ms, 2s or 1m, got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _format_duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(_format_duration)]
"""Seconds as float, written ``250ms`` / ``2s`` / ``1m`` / ``1h``."""

Percent = Annotated[float, Field(ge=0, le=100)]
"""A percentage 0..100 (Istio's ``percentage.value``)."""

Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")]
"""A DNS-label-like name: lower case letters, digits, ``-`` and ``.``."""


class Strict(BaseModel):
    """Base for every model node: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Address(BaseModel):
    """A TCP address written ``host:port`` (``127.0.0.1:8080``); a bare port means 127.0.0.1.

    Envoy counterpart: ``envoy.config.core.v3.SocketAddress`` (``address``, ``port_value``).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"port": value}
        if isinstance(value, str):
            host, sep, port = value.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {value!r}")
            return {"host": host.strip("[]"), "port": int(port)}
        return value

    @model_serializer
    def _to_text(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class StringMatch(Strict):
    """Exactly one of ``exact``, ``prefix``, ``regex`` (RE2), as Istio's ``StringMatch``.

    Envoy counterpart: ``envoy.type.matcher.v3.StringMatcher`` / route ``HeaderMatcher``.
    """

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"bad regex: {exc}") from exc
        return self
