"""Snapshots: per node, the packed resources of each xDS type with a version; and the cache holding them.

A :class:`TypeSet` is a node's resources of one type, made of :class:`Part` groups. Parts are packed
(``google.protobuf.Any``) and hashed once and shared between nodes, so versions are cheap: the version
of a type set is a hash of its parts' digests. A part also serializes once (:meth:`Part.wire`): the
``resources`` entries of a DiscoveryResponse, which the ADS server concatenates for every stream that
needs them, so 1,000 sidecars sharing 5,000 clusters cost one serialization and no per-stream copies
of the resource set. The :class:`SnapshotCache` keeps the latest snapshot
per node and wakes the ADS streams of a node when its snapshot changes (as go-control-plane's
``SnapshotCache`` does for its server).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Mapping

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message


def _pack(msg: Message) -> any_pb2.Any:
    """``msg`` in an ``Any`` (the protocol layer packs for itself: it does not import the translation)."""
    out = any_pb2.Any()
    out.Pack(msg)
    return out


_RESOURCES_TAG = b"\x12"  # (Delta)DiscoveryResponse.resources: field 2, length-delimited
_RESOURCE = discovery_pb2.Resource


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def resources_wire(packed: Iterable[any_pb2.Any]) -> bytes:
    """``packed`` encoded as the repeated ``resources`` field of a DiscoveryResponse (protobuf
    concatenates repeated fields, so these bytes joined with the other fields form the message)."""
    out: list[bytes] = []
    for a in packed:
        body = a.SerializeToString()
        out += (_RESOURCES_TAG, _varint(len(body)), body)
    return b"".join(out)


_SUBSETS: dict[tuple[int, int], tuple[frozenset[str], frozenset[str], bool]] = {}


def is_subset(a: frozenset[str], b: frozenset[str]) -> bool:
    """``a <= b``, remembered for the pair of objects: a part's names against a subscription set
    shared by many streams (5,500 names each) is computed once, not once per stream and push."""
    key = (id(a), id(b))
    hit = _SUBSETS.get(key)
    if hit is not None and hit[0] is a and hit[1] is b:
        return hit[2]
    if len(_SUBSETS) > 4096:
        _SUBSETS.clear()
    result = a <= b
    _SUBSETS[key] = (a, b, result)
    return result


class WireCache:
    """Serialized response entries shared by every stream that sends the same resources: after a
    route change, 1,000 sidecars each lacking the same 1 MB ``outbound`` RouteConfiguration get one
    copy of its bytes, not one each (each held until gRPC writes it). Keyed by the identity of the
    packed messages (kept referenced while cached), bounded in bytes, oldest dropped first."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[tuple[object, ...], tuple[tuple[object, ...], bytes]] = {}
        self._bytes = 0

    def sotw(self, packed: Iterable[any_pb2.Any]) -> bytes:
        """:func:`resources_wire` of ``packed``."""
        items = tuple(packed)
        return self._get(("sotw", *map(id, items)), items, lambda: resources_wire(items))

    def delta(self, entries: Iterable[tuple[str, str, any_pb2.Any]]) -> bytes:
        """DeltaDiscoveryResponse ``resources`` entries for (name, version, packed) triples."""
        items = tuple(entries)

        def build() -> bytes:
            out: list[bytes] = []
            for name, version, packed in items:
                body = _RESOURCE(name=name, version=version, resource=packed).SerializeToString()
                out += (_RESOURCES_TAG, _varint(len(body)), body)
            return b"".join(out)

        key = ("delta", *((n, v, id(a)) for n, v, a in items))
        return self._get(key, tuple(a for _, _, a in items), build)

    def _get(self, key: tuple[object, ...], keep: tuple[object, ...], build: Callable[[], bytes]) -> bytes:
        hit = self._entries.get(key)
        if hit is not None:
            return hit[1]
        wire = build()
        if len(wire) > self.max_bytes // 4:
            return wire  # too big to keep: not shared
        while self._entries and self._bytes + len(wire) > self.max_bytes:
            _, old = self._entries.pop(next(iter(self._entries)))
            self._bytes -= len(old)
        self._entries[key] = (keep, wire)
        self._bytes += len(wire)
        return wire


class Part:
    """An immutable group of packed resources with a content digest and a version per resource
    (the latter for incremental xDS)."""

    __slots__ = ("_delta_wire", "_wire", "base", "changed", "digest", "items", "names", "versions")

    def __init__(self, messages: Mapping[str, Message] | Mapping[str, any_pb2.Any]) -> None:
        items: dict[str, any_pb2.Any] = {}
        versions: dict[str, str] = {}
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(messages):
            msg = messages[name]
            packed = msg if isinstance(msg, any_pb2.Any) else _pack(msg)
            items[name] = packed
            versions[name] = hashlib.blake2b(packed.value, digest_size=8).hexdigest()
            h.update(name.encode())
            h.update(b"\0")
            h.update(packed.value)
        self.items = items
        self.versions = versions
        self.names = frozenset(items)
        self.digest = h.digest()
        self._wire: bytes | None = None
        self._delta_wire: bytes | None = None
        # made by :meth:`replace`: the part it replaced and the names that differ from it (new or at
        # another version), so a stream holding ``base`` compares those only
        self.base: Part | None = None
        self.changed: frozenset[str] = frozenset()

    def wire(self) -> bytes:
        """Every resource as DiscoveryResponse ``resources`` entries (serialized on first use)."""
        if self._wire is None:
            self._wire = resources_wire(self.items.values())
        return self._wire

    def delta_wire(self) -> bytes:
        """Every resource as DeltaDiscoveryResponse ``resources`` entries (``Resource`` with name,
        version and the packed message; serialized on first use): what a delta stream that holds
        none of the part receives, shared by every such stream."""
        if self._delta_wire is None:
            out: list[bytes] = []
            for name, packed in self.items.items():
                body = _RESOURCE(name=name, version=self.versions[name], resource=packed).SerializeToString()
                out += (_RESOURCES_TAG, _varint(len(body)), body)
            self._delta_wire = b"".join(out)
        return self._delta_wire

    def replace(self, changed: Mapping[str, Message]) -> Part:
        """A new part with the resources named in ``changed`` replaced (or added); the others keep
        their packed form (an endpoint change repacks one ClusterLoadAssignment, not 5,000)."""
        new = Part({**self.items, **{n: _pack(m) for n, m in changed.items()}})
        new.base = self
        new.changed = frozenset(n for n in changed if self.versions.get(n) != new.versions[n])
        return new


class TypeSet:
    """A node's resources of one xDS type; ``version`` changes exactly when the content changes."""

    __slots__ = ("parts", "version")

    def __init__(self, parts: Iterable[Part]) -> None:
        self.parts = tuple(parts)
        h = hashlib.blake2b(digest_size=6)
        for p in self.parts:
            h.update(p.digest)
        self.version = h.hexdigest()

    def names(self) -> set[str]:
        """Every resource name."""
        return {n for p in self.parts for n in p.items}

    def covered_by(self, names: frozenset[str]) -> bool:
        """True when every resource name is in ``names`` (without building the set of names)."""
        return all(is_subset(p.names, names) for p in self.parts)

    def entries(self) -> dict[str, tuple[str, any_pb2.Any]]:
        """Every resource: name → (its own version, packed message)."""
        return {n: (p.versions[n], a) for p in self.parts for n, a in p.items.items()}

    def select(self, names: set[str] | None) -> list[any_pb2.Any]:
        """The resources named ``names`` that exist (all of them for ``None``, a wildcard)."""
        if names is None:
            return [a for p in self.parts for a in p.items.values()]
        out = []
        for p in self.parts:
            for n, a in p.items.items():
                if n in names:
                    out.append(a)
        return out


EMPTY = TypeSet(())


class Snapshot:
    """One node's resources of every type (``type_url`` → :class:`TypeSet`)."""

    def __init__(self, types: Mapping[str, TypeSet]) -> None:
        self.types = dict(types)

    def get(self, type_url: str) -> TypeSet:
        """The type set of ``type_url`` (empty when the node has none)."""
        return self.types.get(type_url, EMPTY)

    def with_type(self, type_url: str, ts: TypeSet) -> Snapshot:
        """A copy with ``type_url`` replaced by ``ts``."""
        return Snapshot({**self.types, type_url: ts})


class PartCache:
    """Packs each shared group once per translation (keyed by the group object's identity).

    ``reuse``: snapshots being served; a packed group equal to one of their parts (same digest: same
    names and bytes) is answered with that part, so equal content is one object across versions."""

    def __init__(self, reuse: Iterable[Snapshot] = ()) -> None:
        self._parts: dict[int, tuple[object, Part]] = {}
        self._served: dict[bytes, Part] = {}
        for snap in reuse:
            for ts in snap.types.values():
                for p in ts.parts:
                    self._served.setdefault(p.digest, p)

    def part(self, group: Mapping[str, Message]) -> Part:
        """The :class:`Part` for ``group``, built on first use."""
        hit = self._parts.get(id(group))
        if hit is None or hit[0] is not group:
            new = Part(group)
            hit = (group, self._served.get(new.digest, new))
            self._parts[id(group)] = hit
        return hit[1]


class SnapshotCache:
    """The latest :class:`Snapshot` per node id; ADS streams subscribe to learn about changes.

    Changes happen on the event loop thread (use ``loop.call_soon_threadsafe`` from elsewhere).
    """

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Callable[[], None]]] = {}

    def get(self, node_id: str) -> Snapshot:
        """The node's snapshot (an empty one for an unknown node)."""
        return self._snapshots.get(node_id) or Snapshot({})

    def node_ids(self) -> list[str]:
        """Nodes that have a snapshot."""
        return sorted(self._snapshots)

    def set(self, node_id: str, snapshot: Snapshot) -> None:
        """Replace ``node_id``'s snapshot and wake its streams."""
        self._snapshots[node_id] = snapshot
        for cb in list(self._watchers.get(node_id, ())):
            cb()

    def set_all(self, snapshots: Mapping[str, Snapshot]) -> None:
        """Replace every snapshot; nodes missing from ``snapshots`` (left the mesh) get an empty one."""
        for nid in set(self._snapshots) - set(snapshots):
            self.set(nid, Snapshot({}))
            del self._snapshots[nid]
        for nid, snap in snapshots.items():
            self.set(nid, snap)

    def watch(self, node_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each change of ``node_id``'s snapshot; returns the unsubscribe function."""
        self._watchers.setdefault(node_id, set()).add(callback)

        def cancel() -> None:
            self._watchers.get(node_id, set()).discard(callback)

        return cancel

    @staticmethod
    def notifier(event: asyncio.Event) -> Callable[[], None]:
        """A watch callback that sets ``event``."""
        return event.set


def changed_resources(
    held: TypeSet | None, held_names: frozenset[str] | None, new: TypeSet, names: frozenset[str]
) -> dict[str, any_pb2.Any]:
    """Resources of ``new`` named in ``names`` that a client holding ``held`` (subscribed then to
    ``held_names``) lacks or holds at another version: what a State-of-the-World response of a
    non-wildcard type (EDS, RDS) must carry. "The server sends each resource in its own response"
    except for Listener and Cluster (Envoy docs, xDS protocol, "Grouping Resources into Responses"),
    so the unchanged ones stay out. Parts both sets share (the same object) are skipped whole."""
    if held is None or held_names is None:
        return {n: a for p in new.parts for n, a in p.items.items() if n in names}
    held_ids = {id(p) for p in held.parts}
    common = held_ids & {id(p) for p in new.parts}
    fresh = frozenset() if names is held_names else names - held_names  # newly subscribed
    out: dict[str, any_pb2.Any] = {}
    old_versions: dict[str, str] | None = None
    for p in new.parts:
        if id(p) in common:
            for n in p.names & fresh if fresh else ():
                out[n] = p.items[n]
            continue
        if p.base is not None and id(p.base) in held_ids:  # an update of a part it holds
            for n in p.changed | (p.names & fresh if fresh else frozenset()):
                if n in names:
                    out[n] = p.items[n]
            continue
        if old_versions is None:
            old_versions = {n: v for q in held.parts if id(q) not in common for n, v in q.versions.items()}
        for n, a in p.items.items():
            if n in names and (n in fresh or old_versions.get(n) != p.versions[n]):
                out[n] = a
    return out
