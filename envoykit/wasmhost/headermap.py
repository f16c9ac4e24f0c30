"""A header map with Envoy's semantics (``Http::HeaderMapImpl`` as driven by Envoy's Wasm ``Context``).

- keys are lowercased on every operation (``Http::LowerCaseString``);
- pseudo-headers (``:path``...) stay in front of regular ones (``HeaderList`` keeps them first);
- ``get`` gives the first value (Envoy ``getHeaderMapValue`` returns ``entry[0]``);
- ``replace`` removes every entry of the key and appends one (``setCopy``);
- ``byte_size`` sums key and value lengths (``byteSize()``, what ``proxy_get_header_map_size`` returns).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Union

from envoykit.wasmhost.pairs import Pairs, encode_pairs

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str | bytes, str | bytes]], "HeaderMap", None]


def _b(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode()


_KEYS: dict[str | bytes, bytes] = {}  # name as given -> lowercased bytes (a few hundred at most)


def _key(key: str | bytes) -> bytes:
    """``key`` lowercased as bytes (Envoy ``LowerCaseString``), memoised: the same few names
    are looked up on every request."""
    k = _KEYS.get(key)
    if k is None:
        k = (key if isinstance(key, bytes) else key.encode()).lower()
        if len(_KEYS) < 4096:
            _KEYS[key] = k
    return k


# Envoy's HeaderUtility::headerNameIsValid / headerValueIsValid (nghttp2's rules): a name is
# token characters (lowercase: names are lowered first), a pseudo-header's after its ":"; a value
# has no control character but HTAB. Envoy's HTTP/1 upstream codec checks both for every request.
valid_name = re.compile(rb":?[!#$%&'*+\-.^_`|~0-9a-z]+").fullmatch
bad_value = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


def invalid_header(entries: Pairs) -> str | None:
    """Envoy's refusal of a request whose headers HTTP/1 cannot carry (``invalid header name:
    <name>`` / ``invalid header value for: <name>``, the first bad entry), or ``None``. An empty
    name is not refused (Envoy sends the request without it; not modelled)."""
    for k, v in entries:
        if k and not valid_name(k):
            return f"invalid header name: {k.decode(errors='replace')}"
        if bad_value(v):
            return f"invalid header value for: {k.decode(errors='replace')}"
    return None


def first(entries: Pairs, key: bytes) -> bytes | None:
    """The first value of ``key`` (lowercase bytes, as stored) in ``entries``, or ``None``: the
    host's own lookups of the few headers the HTTP/1 codec reads, without the name's lowering."""
    for k, v in entries:
        if k == key:
            return v
    return None


class HeaderMap:
    """An ordered multi-map of header names to values, stored as bytes, read as text.

    Build from a dict, a list of pairs (repeat a name by repeating the pair) or another map.
    ``m["x-a"]`` is the first value (``KeyError`` when absent), ``m.get_all("x-a")`` every value.
    """

    __slots__ = ("_encoded", "_entries")

    def __init__(self, headers: HeadersLike = None) -> None:
        self._entries: Pairs = []
        self._encoded: bytes | None = None  # the pairs serialised, until the map changes
        if headers is None:
            return
        if isinstance(headers, HeaderMap):
            self._entries = list(headers._entries)  # already normalised
            self._encoded = headers._encoded
            return
        items: Iterable[tuple[str | bytes, str | bytes]]
        # a list first: the ABC check of Mapping costs more than building a small map
        items = (
            headers
            if isinstance(headers, list)
            else headers.items()
            if isinstance(headers, Mapping)
            else headers
        )
        entries = [(_key(k), v if isinstance(v, bytes) else v.encode()) for k, v in items]
        # pseudo-headers first, each group in its own order (what adding them one by one gives)
        self._entries = [e for e in entries if e[0][:1] == b":"] + [e for e in entries if e[0][:1] != b":"]

    @classmethod
    def of_entries(cls, entries: Pairs) -> HeaderMap:
        """A map over ``entries`` as they are: lowercase bytes names, pseudo-headers first (no
        copy, no checks; for maps the host builds itself)."""
        hmap = cls.__new__(cls)
        hmap._entries, hmap._encoded = entries, None
        return hmap

    # -- Envoy operations (bytes) -------------------------------------------------------------
    def add(self, key: str | bytes, value: str | bytes) -> None:
        """``addCopy``: append (pseudo-headers after the last pseudo-header)."""
        k = _KEYS.get(key) or _key(key)
        entry = (k, value if isinstance(value, bytes) else value.encode())
        entries = self._entries
        self._encoded = None
        if k[:1] == b":":
            i = 0
            while i < len(entries) and entries[i][0][:1] == b":":
                i += 1
            entries.insert(i, entry)
        else:
            entries.append(entry)

    def get_bytes(self, key: str | bytes) -> bytes | None:
        """The first value of ``key`` or ``None``."""
        k = _KEYS.get(key) or _key(key)
        for ek, ev in self._entries:  # first(), inline: a host function's lookup
            if ek == k:
                return ev
        return None

    def remove(self, key: str | bytes) -> None:
        """Remove every entry of ``key``."""
        k = _key(key)
        self._entries = [e for e in self._entries if e[0] != k]
        self._encoded = None

    def replace(self, key: str | bytes, value: str | bytes) -> None:
        """``setCopy``: remove every entry of ``key``, then add one."""
        self.remove(key)
        self.add(key, value)

    def set_pairs(self, pairs: Pairs) -> None:
        """Envoy ``setHeaderMapPairs``: drop every entry, then add ``pairs`` in order."""
        self._entries = HeaderMap(pairs)._entries
        self._encoded = None

    def pairs(self) -> Pairs:
        """A copy of the entries as (key, value) bytes, in map order."""
        return list(self._entries)

    def encoded(self) -> bytes:
        """The entries in the Proxy-Wasm pairs format (:func:`~envoykit.wasmhost.pairs.encode_pairs`),
        serialised once and kept until the map changes (SDKs read whole maps on every callback)."""
        if self._encoded is None:
            self._encoded = encode_pairs(self._entries)
        return self._encoded

    def byte_size(self) -> int:
        """Sum of key and value lengths (Envoy ``HeaderMap::byteSize``)."""
        return sum(len(k) + len(v) for k, v in self._entries)

    # -- convenience (text) -------------------------------------------------------------------
    def __getitem__(self, key: str) -> str:
        v = self.get_bytes(key)
        if v is None:
            raise KeyError(key)
        return v.decode(errors="replace")

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value as text, or ``default``."""
        v = self.get_bytes(key)
        return default if v is None else v.decode(errors="replace")

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key``, in order."""
        k = _b(key).lower()
        return [v.decode(errors="replace") for ek, v in self._entries if ek == k]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | bytes) and self.get_bytes(key) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return (k.decode(errors="replace") for k, _ in self._entries)

    def items(self) -> list[tuple[str, str]]:
        """(name, value) text pairs in order, repeated names included."""
        return [(k.decode(errors="replace"), v.decode(errors="replace")) for k, v in self._entries]

    def to_dict(self) -> dict[str, str]:
        """Name → values joined by ``,`` (for printing and comparing)."""
        out: dict[str, str] = {}
        for k, v in self.items():
            out[k] = f"{out[k]},{v}" if k in out else v
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeaderMap):
            return self._entries == other._entries
        if isinstance(other, Mapping):
            return self.to_dict() == {str(k).lower(): str(v) for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"HeaderMap({self.items()!r})"
