"""Read one rate-limit YAML file into typed records, checking it the way envoyproxy/ratelimit does.

The file format is envoyproxy/ratelimit's (``domain`` + nested ``descriptors``). The checks and their
wording follow its loader so that migrating users see the same messages:

1. YAML parse → ``error loading config file: yaml: line N: <problem>``;
2. the key whitelist walk → ``config error, unknown key 'x'``, ``config error, key is not of type
   string: 0.25``, ``config error, yaml file contains list of type other than map: a``,
   ``error checking config`` (a leaf that is not a string, int, bool or null, e.g. a float);
3. typed decoding → ``error loading config file: line N: cannot unmarshal !!str `abc` into uint32``.

Scalars decoded as strings keep their text as written (``value: 01`` is ``"01"``), as the reference's
YAML library does. The semantic checks (empty domain, duplicates, units, replaces) live in
:mod:`envoykit.ratelimit.config`. Every error is a :class:`RateLimitConfigError` carrying the file
and, where known, the line and field path.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from envoykit.core.errors import ConfigError

# Keys the reference accepts anywhere in a file, plus envoykit's ``algorithm`` (opt-in, per rule).
VALID_KEYS = frozenset(
    {
        "domain",
        "key",
        "value",
        "descriptors",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "unlimited",
        "shadow_mode",
        "quota_mode",
        "name",
        "replaces",
        "detailed_metric",
        "value_to_metric",
        "share_threshold",
        "metadata",
        "algorithm",
    }
)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_UINT32_MAX = 2**32 - 1


class RateLimitConfigError(ConfigError):
    """A rate-limit config file that cannot be used.

    ``message`` is the reference's wording; :attr:`reference_text` renders ``<file>: <message>``
    exactly as envoyproxy/ratelimit does, while ``str(err)`` adds the line and field path.
    """

    def __init__(self, message: str, *, hint: str = "", **where: Any) -> None:
        self.hint = hint  # envoykit's advice after the reference's words (a close key name)
        super().__init__(message, **where)

    def __str__(self) -> str:
        return super().__str__() + getattr(self, "hint", "")

    @property
    def reference_text(self) -> str:
        """``<file>: <message>``: the reference loader's error string."""
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class ReplacesSpec:
    """One ``replaces`` entry of a ``rate_limit``."""

    name: str


@dataclass(frozen=True)
class RateLimitSpec:
    """A ``rate_limit`` block as written (unit not yet checked)."""

    requests_per_unit: int = 0
    unit: str = ""
    unlimited: bool = False
    name: str = ""
    replaces: tuple[ReplacesSpec, ...] = ()
    algorithm: str = ""
    line: int | None = None


@dataclass(frozen=True)
class DescriptorSpec:
    """One entry of ``descriptors`` as written; ``path`` is its field path (``descriptors.0``)."""

    key: str = ""
    value: str = ""
    rate_limit: RateLimitSpec | None = None
    descriptors: tuple[DescriptorSpec, ...] = ()
    shadow_mode: bool = False
    quota_mode: bool = False
    detailed_metric: bool = False
    value_to_metric: bool = False
    share_threshold: bool = False
    metadata: dict[str, Any] | None = None
    path: str = ""
    line: int | None = None


@dataclass(frozen=True)
class FileSpec:
    """One parsed file: its ``domain`` and top-level ``descriptors``."""

    name: str
    domain: str = ""
    descriptors: tuple[DescriptorSpec, ...] = field(default=())


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _err(name: str, message: str, node: yaml.Node | None = None, path: str = "") -> RateLimitConfigError:
    return RateLimitConfigError(
        message, file=name, line=_line(node) if node is not None else None, field=path or None
    )


def _show(node: yaml.Node) -> str:
    """Render a node like Go's ``%v`` of the decoded value (scalars as written)."""
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    if isinstance(node, yaml.SequenceNode):
        return "[" + " ".join(_show(n) for n in node.value) + "]"
    if isinstance(node, yaml.MappingNode):
        return "map[" + " ".join(f"{_show(k)}:{_show(v)}" for k, v in node.value) + "]"
    return "?"


def _check_keys(name: str, node: yaml.MappingNode, path: str) -> None:
    """The reference's whitelist walk: every key known and a string, lists hold maps, leaves simple."""
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode) or knode.tag != _STR:
            raise _err(name, f"config error, key is not of type string: {_show(knode)}", knode, path)
        key = str(knode.value)
        here = f"{path}.{key}" if path else key
        if key not in VALID_KEYS:
            # the reference's wording, then the closest known key
            close = difflib.get_close_matches(key, sorted(VALID_KEYS), n=1, cutoff=0.6)
            err = _err(name, f"config error, unknown key '{key}'", knode, here)
            if close:
                err = RateLimitConfigError(
                    err.message, hint=f" (did you mean '{close[0]}'?)", file=err.file, line=err.line,
                    field=err.field,
                )  # fmt: skip
            raise err
        if key == "metadata":  # free-form: its contents are the user's
            continue
        if isinstance(vnode, yaml.SequenceNode):
            for i, item in enumerate(vnode.value):
                if not isinstance(item, yaml.MappingNode):
                    raise _err(
                        name,
                        f"config error, yaml file contains list of type other than map: {_show(item)}",
                        item,
                        f"{here}.{i}",
                    )
                _check_keys(name, item, f"{here}.{i}")
        elif isinstance(vnode, yaml.MappingNode):
            _check_keys(name, vnode, here)
        elif isinstance(vnode, yaml.ScalarNode) and vnode.tag in (_STR, _INT, _BOOL, _NULL):
            continue
        else:
            raise _err(name, "error checking config", vnode, here)


def _unmarshal_error(name: str, node: yaml.Node, into: str, path: str) -> RateLimitConfigError:
    tag = node.tag.rsplit(":", 1)[-1]
    shown = f" `{node.value}`" if isinstance(node, yaml.ScalarNode) else ""
    return _err(
        name,
        f"error loading config file: line {_line(node)}: cannot unmarshal !!{tag}{shown} into {into}",
        node,
        path,
    )


class _Decoder:
    """Typed decoding of an already key-checked document (the reference's second unmarshal)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._constructor = yaml.SafeLoader("")

    def string(self, node: yaml.Node, path: str) -> str:
        if isinstance(node, yaml.ScalarNode):
            return "" if node.tag == _NULL else str(node.value)
        raise _unmarshal_error(self.name, node, "string", path)

    def boolean(self, node: yaml.Node, path: str) -> bool:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _NULL:
                return False
            if node.tag == _BOOL:
                return bool(self._constructor.construct_yaml_bool(node))
        raise _unmarshal_error(self.name, node, "bool", path)

    def uint32(self, node: yaml.Node, path: str) -> int:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _NULL:
                return 0
            if node.tag == _INT:
                value = int(self._constructor.construct_yaml_int(node))
                if 0 <= value <= _UINT32_MAX:
                    return value
        raise _unmarshal_error(self.name, node, "uint32", path)

    def items(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        if isinstance(node, yaml.MappingNode):
            return [(str(k.value), v) for k, v in node.value]
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return []
        raise _unmarshal_error(self.name, node, "a map", path)

    def seq(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return []
        raise _unmarshal_error(self.name, node, "a list", path)

    def plain(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def rate_limit(self, node: yaml.Node, path: str) -> RateLimitSpec | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return None
        kw: dict[str, Any] = {"line": _line(node)}
        for key, v in self.items(node, path):
            here = f"{path}.{key}"
            if key == "requests_per_unit":
                kw[key] = self.uint32(v, here)
            elif key == "unlimited":
                kw[key] = self.boolean(v, here)
            elif key in ("unit", "name", "algorithm"):
                kw[key] = self.string(v, here)
            elif key == "replaces":
                reps = []
                for i, item in enumerate(self.seq(v, here)):
                    rname = ""
                    for rk, rv in self.items(item, f"{here}.{i}"):
                        if rk == "name":
                            rname = self.string(rv, f"{here}.{i}.name")
                    reps.append(ReplacesSpec(rname))
                kw[key] = tuple(reps)
        return RateLimitSpec(**kw)

    def descriptors(self, node: yaml.Node, path: str) -> tuple[DescriptorSpec, ...]:
        return tuple(self.descriptor(item, f"{path}.{i}") for i, item in enumerate(self.seq(node, path)))

    def descriptor(self, node: yaml.Node, path: str) -> DescriptorSpec:
        kw: dict[str, Any] = {"path": path, "line": _line(node)}
        for key, v in self.items(node, path):
            here = f"{path}.{key}"
            if key in ("key", "value"):
                kw[key] = self.string(v, here)
            elif key == "rate_limit":
                kw[key] = self.rate_limit(v, here)
            elif key == "descriptors":
                kw[key] = self.descriptors(v, here)
            elif key in (
                "shadow_mode",
                "quota_mode",
                "detailed_metric",
                "value_to_metric",
                "share_threshold",
            ):
                kw[key] = self.boolean(v, here)
            elif key == "metadata":
                value = self.plain(v)
                if value is not None and not isinstance(value, dict):
                    raise _err(self.name, "error parsing metadata: metadata must be a map", v, here)
                kw[key] = value
        return DescriptorSpec(**kw)


def parse_file(name: str, text: str) -> FileSpec:
    """Parse and key-check one file's text; ``name`` is used in errors.

    Raises:
        RateLimitConfigError: YAML syntax, unknown or non-string keys, bad leaf types, wrong types.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        where = f"line {line}: " if line is not None else ""
        raise RateLimitConfigError(
            f"error loading config file: yaml: {where}{exc.problem or exc}", file=name, line=line
        ) from exc
    except yaml.YAMLError as exc:
        raise RateLimitConfigError(f"error loading config file: yaml: {exc}", file=name) from exc
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        return FileSpec(name=name)
    if not isinstance(root, yaml.MappingNode):
        raise _unmarshal_error(name, root, "map[interface {}]interface {}", "")
    _check_keys(name, root, "")
    dec = _Decoder(name)
    domain = ""
    descriptors: tuple[DescriptorSpec, ...] = ()
    for key, v in dec.items(root, ""):
        if key == "domain":
            domain = dec.string(v, "domain")
        elif key == "descriptors":
            descriptors = dec.descriptors(v, "descriptors")
    return FileSpec(name=name, domain=domain, descriptors=descriptors)
