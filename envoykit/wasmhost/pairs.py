"""Header-map ("pairs") serialization, exactly as cpp-host's ``src/pairs_util.cc``.

Layout: u32 LE count N; N times (u32 LE key length, u32 LE value length); then for each pair the key
bytes, ``\\0``, the value bytes, ``\\0``. An empty map is written as zero bytes (cpp-host
``PairsUtil::pairsSize`` of an empty vector is 4, but the host returns size 0 for an empty map;
see ``exports.cc`` ``get_header_map_pairs``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

Pairs = list[tuple[bytes, bytes]]

# Limits of cpp-host PairsUtil::toPairs: more entries or bytes than this and the map is refused.
MAX_PAIRS = 1024
MAX_PAIRS_BYTES = 1024 * 1024


def encode_pairs(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Serialize ``pairs``; an empty sequence gives ``b""`` (what the host hands to the module)."""
    if not pairs:
        return b""
    head = [struct.pack("<I", len(pairs))]
    body: list[bytes] = []
    for key, value in pairs:
        head.append(struct.pack("<II", len(key), len(value)))
        body += [key, b"\0", value, b"\0"]
    return b"".join(head + body)


def decode_pairs(data: bytes) -> Pairs | None:
    """Parse serialized pairs; ``None`` when malformed (cpp-host returns an empty map then).

    Accepts ``b""`` and a lone ``b"\\0"`` as the empty map (the spec allows both). Rejects more
    than :data:`MAX_PAIRS` entries, more than :data:`MAX_PAIRS_BYTES` bytes, missing NUL
    terminators and trailing bytes, as ``toPairs`` does.
    """
    if len(data) <= 1 and data in (b"", b"\0"):
        return []
    if len(data) < 4 or len(data) > MAX_PAIRS_BYTES:
        return None
    (count,) = struct.unpack_from("<I", data, 0)
    if count > MAX_PAIRS:
        return None
    pos = 4
    sizes: list[tuple[int, int]] = []
    for _ in range(count):
        if pos + 8 > len(data):
            return None
        sizes.append(struct.unpack_from("<II", data, pos))
        pos += 8
    out: Pairs = []
    for klen, vlen in sizes:
        kend = pos + klen
        vend = kend + 1 + vlen
        if vend + 1 > len(data) or data[kend] != 0 or data[vend] != 0:
            return None
        out.append((data[pos:kend], data[kend + 1 : vend]))
        pos = vend + 1
    if pos != len(data):
        return None
    return out


def to_bytes_pairs(items: Iterable[tuple[str | bytes, str | bytes]]) -> Pairs:
    """Normalise (str|bytes, str|bytes) pairs to bytes (UTF-8)."""
    return [(_b(k), _b(v)) for k, v in items]


def _b(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode()
