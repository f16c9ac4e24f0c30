"""What an incremental (delta) xDS client holds of one type, kept as shared parts where it can.

A sidecar of a 5,000-service mesh holds 5,500 clusters and as many assignments. Kept as a name →
version dict per type per stream, 500 delta streams held about 0.6 GB; yet nearly every stream holds
exactly the snapshot's shared parts. :class:`Held` therefore keeps whole parts (every resource at the
part's version, the part object shared by all streams) plus a small dict of names that differ from
them: a resource sent on its own, or removed (``None``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from envoykit.control.xds.snapshot import Part, is_subset

_MAX_PARTS = 8  # beyond this many whole parts, fold them into the names (lookups stay short)


class Held:
    """Resource name → version the client holds; a mapping with the dict operations the delta
    protocol uses (``get``, ``in``, item assignment, ``pop``, ``update``, iteration, ``len``)."""

    __slots__ = ("names", "parts")

    def __init__(self) -> None:
        self.parts: list[Part] = []  # newest first: a newer part shadows an older one's names
        self.names: dict[str, str | None] = {}  # overrides the parts (None: not held)

    def get(self, name: str) -> str | None:
        """The version held of ``name`` (None: not held)."""
        if name in self.names:
            return self.names[name]
        for p in self.parts:
            v = p.versions.get(name)
            if v is not None:
                return v
        return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __setitem__(self, name: str, version: str) -> None:
        self.names[name] = version

    def pop(self, name: str, default: None = None) -> str | None:
        """Forget ``name``; returns the version that was held (or None)."""
        old = self.get(name)
        if any(name in p.versions for p in self.parts):
            self.names[name] = None
        else:
            self.names.pop(name, None)
        return old

    def update(self, versions: Mapping[str, str]) -> None:
        """Hold ``versions`` (name → version)."""
        self.names.update(versions)

    def add_part(self, part: Part) -> None:
        """The client now holds every resource of ``part`` at the part's versions."""
        self.parts.insert(0, part)
        for n in [n for n in self.names if n in part.names]:  # the overrides are usually few
            del self.names[n]
        if len(self.parts) > _MAX_PARTS:
            folded: dict[str, str | None] = {}
            for p in reversed(self.parts):
                folded.update(p.versions)
            folded.update(self.names)
            self.names = {n: v for n, v in folded.items() if v is not None}
            self.parts = []

    def rebase(self, part: Part) -> None:
        """The client holds ``part``: it held ``part.base`` whole and has been sent the names that
        differ (:attr:`Part.changed`). The new part takes the old one's place."""
        base = part.base
        if base is not None and is_subset(base.names, part.names):
            self.parts = [p for p in self.parts if p is not base]
        self.add_part(part)

    def remove_part(self, part: Part) -> None:
        """Undo :meth:`add_part` (the client refused the response that carried it)."""
        self.parts = [p for p in self.parts if p is not part]

    def holds(self, part: Part) -> bool:
        """True when every resource of ``part`` is held at the part's version (without looking at
        each name): the part itself is held and nothing newer or on its own shadows it."""
        for p in self.parts:
            if p is part:
                return self.names.keys().isdisjoint(part.names)
            if not p.names.isdisjoint(part.names):
                return False
        return False

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for n, v in self.names.items():
            seen.add(n)
            if v is not None:
                yield n
        for p in self.parts:
            for n in p.names:
                if n not in seen:
                    seen.add(n)
                    yield n

    def __len__(self) -> int:
        return sum(1 for _ in self)
