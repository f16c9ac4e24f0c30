"""YAML files that remember where each value came from, so errors can name the line.

A loader parses a file with :func:`load_yaml_file`, validates ``doc.data`` into its typed model, and
turns any failure into a :class:`~envoykit.core.errors.ConfigError` that names the file, the line and
the field path (``validation_error_to_config_error``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

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


def _fields_at(model: Any, loc: Sequence[str | int]) -> list[str]:
    """The field names (and aliases) of the pydantic model found at ``loc`` inside ``model``."""
    types = [model]
    for part in loc:
        nxt: list[Any] = []
        for t in types:
            nxt += _step(t, part)
        types = nxt
    names: list[str] = []
    for t in types:
        for name, info in getattr(t, "model_fields", {}).items():
            names.append(info.alias or name)
    return names


def _step(t: Any, part: str | int) -> list[Any]:
    origin = get_origin(t)
    if origin is not None and origin not in (list, dict, tuple, set, frozenset):
        return [x for a in get_args(t) for x in _step(a, part)]  # Union, Annotated, Literal
    if isinstance(part, int):
        args = get_args(t)
        return [args[0]] if origin in (list, tuple, set, frozenset) and args else []
    if origin is dict:
        args = get_args(t)
        return [args[1]] if len(args) == 2 else []
    fields = getattr(t, "model_fields", None)
    if not fields:
        return []
    for name, info in fields.items():
        if part in (name, info.alias):
            return [info.annotation]
    return []


def _message(e: Any, model: Any, loc: Sequence[str | int]) -> str:
    if e["type"] != "extra_forbidden" or not loc:
        return str(e["msg"])
    name = str(loc[-1])
    msg = f"unknown field {name!r}"
    if model is not None:
        close = difflib.get_close_matches(name, _fields_at(model, loc[:-1]), n=1, cutoff=0.6)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
    return msg


def validation_error_to_config_error(
    err: ValidationError, doc: YamlDocument, prefix: Sequence[str | int] = (), model: Any = None
) -> ConfigError:
    """Turn pydantic's errors into one ConfigError: the first names file/line/field, others follow.

    ``prefix`` is prepended to each error location, for models validated from a sub-tree of ``doc``.
    ``model`` (the pydantic class validated) lets an unknown field be named with the closest known
    one: ``unknown field 'timeot' (did you mean 'timeout'?)`` instead of pydantic's "Extra inputs are
    not permitted". Unknown fields come first: a misspelt key also makes its real one "required".
    """
    errors = sorted(err.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")

    def clean(e: Any) -> list[str | int]:
        return [x for x in e["loc"] if not isinstance(x, str) or not x.startswith("function-")]

    first = errors[0]
    loc = [*prefix, *clean(first)]
    message = _message(first, model, clean(first))
    if len(errors) > 1:
        rest = "; ".join(
            f"{'.'.join(str(x) for x in (*prefix, *clean(e)))}: {_message(e, model, clean(e))}"
            for e in errors[1:4]
        )
        message += f" (and {len(errors) - 1} more: {rest})"
    return yaml_error(doc, loc, message)
