"""The one error type for configuration a person wrote (policies, limits, mesh.yaml)."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration file that cannot be used.

    Attributes:
        file: path of the file as given (``None`` when the input was not a file).
        line: 1-based line in ``file`` where the problem is, when known.
        field: dotted field path inside the document (``descriptors.0.rate_limit.unit``), when known.
        message: what is wrong, in words.

    ``str(err)`` renders ``file:line: field: message`` with the unknown parts left out, which is the
    shape every envoykit loader reports.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (where, self.field) if p]
        return ": ".join([*parts, self.message])
