"""Header maps as Envoy sends them, and header mutations as Envoy wants them back.

Envoy's ext_proc filter sends header values as ``raw_value`` bytes (``HeaderValue.raw_value``,
envoy/config/core/v3/base.proto) and expects mutations with ``raw_value`` too, so values stay exact
for any byte sequence. Header names are lower case (HTTP/2 style, including pseudo headers such as
``:path`` and ``:status``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import overload

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb


class Headers:
    """A read-only view of one ``HeaderMap``: lower-case names to ``str`` values (latin-1 decoded).

    Decoding happens once, on first access, so a processor that never reads headers pays nothing.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, header_map: base_pb2.HeaderMap | None = None) -> None:
        self._map = header_map
        self._items: list[tuple[str, str]] | None = None

    @classmethod
    def of(cls, items: list[tuple[str, str]]) -> Headers:
        """Headers from ``(name, value)`` pairs (names are lower-cased); used by tests and tools."""
        h = cls()
        h._items = [(k.lower(), v) for k, v in items]
        return h

    def items(self) -> list[tuple[str, str]]:
        """All ``(name, value)`` pairs in Envoy's order, repeated names kept."""
        if self._items is None:
            out: list[tuple[str, str]] = []
            if self._map is not None:
                for h in self._map.headers:
                    out.append((h.key, h.raw_value.decode("latin-1") if h.raw_value else h.value))
            self._items = out
        return self._items

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (case-insensitive), or ``default``."""
        name = name.lower()
        for k, v in self.items():
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order."""
        name = name.lower()
        return [v for k, v in self.items() if k == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self.items())

    def __len__(self) -> int:
        return len(self.items())

    def byte_size(self) -> int:
        """Sum of name and value lengths in bytes: how Envoy sizes a header map
        (``HeaderMap::byteSize``), the header part of ``request.total_size`` / ``response.total_size``."""
        if self._map is not None and self._items is None:
            return sum(len(h.key) + len(h.raw_value or h.value.encode()) for h in self._map.headers)
        return sum(len(k) + len(v.encode("latin-1", "replace")) for k, v in self.items())

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


class HeaderEdits:
    """Header changes collected during one phase, rendered as a ``HeaderMutation``.

    ``set`` overwrites (``OVERWRITE_IF_EXISTS_OR_ADD``), ``append`` adds another value
    (``APPEND_IF_EXISTS_OR_ADD``); see ``HeaderValueOption.append_action`` in base.proto.
    """

    __slots__ = ("remove", "set")

    def __init__(self) -> None:
        self.set: list[tuple[str, bytes, bool]] = []
        self.remove: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.set or self.remove)

    def __len__(self) -> int:
        return len(self.set) + len(self.remove)

    def truncate(self, n_set: int, n_remove: int) -> None:
        """Drop edits made after the given lengths (undo a processor that failed)."""
        del self.set[n_set:]
        del self.remove[n_remove:]

    def to_proto(self) -> pb.HeaderMutation:
        """The ``HeaderMutation`` message, values as ``raw_value``."""
        hm = pb.HeaderMutation()
        overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        for name, value, add in self.set:
            opt = hm.set_headers.add()
            opt.header.key = name
            opt.header.raw_value = value
            opt.append_action = append if add else overwrite
        hm.remove_headers.extend(self.remove)
        return hm


def to_bytes(value: str | bytes | int) -> bytes:
    """Header value as bytes: ``str`` is encoded as latin-1 (HTTP field values are octets)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("latin-1")
