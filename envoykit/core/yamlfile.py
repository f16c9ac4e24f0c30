"""YAML files that remember where each value came from, so errors can name the line.

A loader parses a file with :func:`load_yaml_file`, validates ``doc.data`` into its typed model, and
turns any failure into a :class:`~envoykit.core.errors.ConfigError` that names the file, the line and
the field path (``validation_error_to_config_error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from envoykit.core.errors import ConfigError


@dataclass(frozen=True)
class YamlDocument:
    """One parsed YAML document: ``data`` (plain Python values) and its node tree for line lookups."""

    path: str
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the value at ``loc`` (keys and list indices), or of its nearest parent."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for seg in loc:
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(seg):
                        nxt = value
                        line = key.start_mark.line + 1
                        break
                if nxt is None:
                    return line
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and seg < len(node.value):
                node = node.value[seg]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _parse(text: str, path: str) -> YamlDocument:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", file=path, line=line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=path) from exc
    return YamlDocument(path=path, data=data, root=root)


def load_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse one YAML file.

    Raises:
        ConfigError: the file cannot be read or is not valid YAML (with the line of the problem).
    """
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=p) from exc
    return _parse(text, p)


def parse_yaml_text(text: str, path: str = "<string>") -> YamlDocument:
    """Parse YAML from a string; ``path`` is only used in error messages."""
    return _parse(text, path)


def yaml_error(doc: YamlDocument, loc: Sequence[str | int], message: str) -> ConfigError:
    """A ConfigError at field path ``loc`` of ``doc``, with the line filled in."""
    field = ".".join(str(x) for x in loc) or None
    return ConfigError(message, file=doc.path, line=doc.line_of(loc), field=field)


def validation_error_to_config_error(
    err: ValidationError, doc: YamlDocument, prefix: Sequence[str | int] = ()
) -> ConfigError:
    """Turn pydantic's errors into one ConfigError: the first names file/line/field, others follow.

    ``prefix`` is prepended to each error location, for models validated from a sub-tree of ``doc``.
    """
    errors = err.errors(include_url=False)
    first = errors[0]
    loc = [*prefix, *[x for x in first["loc"] if not isinstance(x, str) or not x.startswith("function-")]]
    message = first["msg"]
    if len(errors) > 1:
        rest = "; ".join(f"{'.'.join(str(x) for x in (*prefix, *e['loc']))}: {e['msg']}" for e in errors[1:4])
        message += f" (and {len(errors) - 1} more: {rest})"
    return yaml_error(doc, loc, message)
