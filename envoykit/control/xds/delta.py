"""Incremental (Delta) xDS on the ADS stream: ``DeltaAggregatedResources``.

Per type the server remembers what the client holds (name → version, seeded from the request's
``initial_resource_versions`` on reconnect) and what it subscribed to (a wildcard for CDS and LDS when
no names are given, or ``*``). A response carries only resources whose version differs from what the
client holds, and ``removed_resources`` for what it holds that no longer exists. Like the SotW stream:

* subscription changes are always applied (they are incremental; a stale nonce only means the request
  does not acknowledge our last response);
* one response per type is in flight; the next waits for its ACK or NACK;
* a NACK is recorded (node, type, Envoy's message) and the refused versions are not resent;
* listeners and routes wait until every cluster and its endpoints are acknowledged, and clusters that a
  change removes are removed only once listeners and routes are up to date (make before break).

A stream remembers the type set it last reconciled with (``seen``); until its subscriptions change or
it NACKs, a type whose set is the same object is skipped, and one whose set changed is compared only
in the parts that changed (an endpoint change at 5,000 services compares one part, not every
resource, for each of 1,000 streams).

Source: Envoy docs, "xDS REST and gRPC protocol", section "Incremental xDS".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from envoykit.control.xds.held import Held
from envoykit.control.xds.snapshot import Part, Snapshot, TypeSet, WireCache, is_subset
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER

WILDCARD_TYPES = {CLUSTER, LISTENER}


@dataclass
class _DeltaWatch:
    subscribed: frozenset[str] = frozenset()  # one object for every stream naming the same set
    wildcard: bool = False
    known: Held = field(default_factory=Held)  # what the client holds: name → version
    pending: str = ""  # nonce of our response awaiting ACK/NACK
    sent: dict[str, str | None] = field(
        default_factory=dict
    )  # in that response, sent on their own: name → version (None: removed)
    sent_parts: list[Part] = field(default_factory=list)  # in that response, whole parts
    sent_rebased: list[Part] = field(default_factory=list)  # updates of parts it held whole
    before: dict[str, str | None] = field(default_factory=dict)  # what the client held before it
    nacked: dict[str, str | None] = field(default_factory=dict)
    started: bool = False
    seen: TypeSet | None = None  # the type set last reconciled with (everything it needed was sent)
    touched: bool = True  # subscriptions changed or a NACK since then: compare everything again


@dataclass
class DeltaState:
    """One delta stream: per type what the client subscribed to, holds and has not acknowledged yet."""

    node_id: str
    watches: dict[str, _DeltaWatch] = field(default_factory=dict)

    def acked(self) -> dict[str, int]:
        """Resources held per type (for status)."""
        return {t.rsplit(".", 1)[1]: len(w.known) for t, w in self.watches.items()}


@dataclass
class DeltaOut:
    """A DeltaDiscoveryResponse to write, as byte chunks: the serialized header (type, version,
    nonce, removals, resources picked one by one) followed by whole parts' shared ``resources``
    entries (:meth:`Part.delta_wire`); protobuf merges the concatenation into one message."""

    type_url: str
    nonce: str
    chunks: list[bytes]

    def message(self) -> discovery_pb2.DeltaDiscoveryResponse:
        """The response parsed back (tests, debugging)."""
        return discovery_pb2.DeltaDiscoveryResponse.FromString(b"".join(self.chunks))


class DeltaProtocol:
    """The incremental protocol's decisions, kept apart from the gRPC plumbing (:class:`AdsServer`)."""

    def __init__(self, wires: WireCache | None = None) -> None:
        self._wires = wires or WireCache()
        self._nonce = itertools.count(1)
        self._name_sets: dict[frozenset[str], frozenset[str]] = {}

    def on_request(self, st: DeltaState, req: discovery_pb2.DeltaDiscoveryRequest) -> str | None:
        """Apply a request; returns Envoy's error message when it NACKs our last response."""
        w = st.watches.setdefault(req.type_url, _DeltaWatch())
        if req.resource_names_subscribe or req.resource_names_unsubscribe or not w.started:
            w.touched = True
        if not w.started:
            w.started = True
            w.known.update(req.initial_resource_versions)
            if req.type_url in WILDCARD_TYPES and not req.resource_names_subscribe:
                w.wildcard = True  # legacy wildcard: a first CDS/LDS request naming nothing
        if req.resource_names_subscribe or req.resource_names_unsubscribe:
            subscribed = set(w.subscribed)
            for name in req.resource_names_subscribe:
                if name == "*":
                    w.wildcard = True
                else:
                    subscribed.add(name)
            for name in req.resource_names_unsubscribe:
                if name == "*":
                    w.wildcard = False
                else:
                    subscribed.discard(name)
                    w.known.pop(name, None)
            names = frozenset(subscribed)
            if len(self._name_sets) > 1024:
                self._name_sets.clear()
            w.subscribed = self._name_sets.setdefault(names, names)
        error = None
        if req.response_nonce and req.response_nonce == w.pending:
            if req.HasField("error_detail"):
                error = req.error_detail.message
                w.touched = True
                w.nacked.update(w.sent)
                for p in w.sent_parts:
                    w.nacked.update(p.versions)
                    w.known.remove_part(p)
                for p in w.sent_rebased:  # it keeps the part it held (its changed names are in sent)
                    w.known.remove_part(p)
                    if p.base is not None:
                        w.known.add_part(p.base)
                for name, old in w.before.items():  # the client kept what it had
                    if old is None:
                        w.known.pop(name, None)
                    else:
                        w.known[name] = old
            else:
                w.nacked.clear()
            w.pending, w.sent, w.before, w.sent_parts, w.sent_rebased = "", {}, {}, [], []
        return error

    def _wanted(self, w: _DeltaWatch, name: str) -> bool:
        return w.wildcard or name in w.subscribed

    def _settled(self, st: DeltaState, t: str, snap: Snapshot) -> bool:
        """The client acknowledged everything of type ``t`` that the snapshot has for it (trivially so
        for a type it never asked for)."""
        w = st.watches.get(t)
        if w is None:
            return True
        if w.pending:
            return False
        ts = snap.get(t)
        if w.seen is ts and not w.touched:
            return True
        for p in ts.parts:
            if w.known.holds(p):
                continue
            if not all(w.known.get(n) == v for n, v in p.versions.items() if self._wanted(w, n)):
                return False
        return True

    def _whole(self, w: _DeltaWatch, p: Part) -> bool:
        """Every resource of ``p`` is wanted, and the client holds or refused none of them."""
        known, nacked = w.known, w.nacked
        if any(n in known or n in nacked for n in p.names):  # usually decided by the first name
            return False
        return w.wildcard or is_subset(p.names, w.subscribed)

    def responses(self, st: DeltaState, snap: Snapshot) -> list[DeltaOut]:
        """What to send now, in make-before-break order."""
        out = []
        for t in [*TYPE_ORDER, *(t for t in st.watches if t not in TYPE_ORDER)]:
            w = st.watches.get(t)
            if w is None or w.pending:
                continue
            if t in (LISTENER, ROUTE) and not (
                self._settled(st, CLUSTER, snap) and self._settled(st, ENDPOINT, snap)
            ):
                continue
            ts = snap.get(t)
            if w.seen is ts and not w.touched:
                continue
            if w.seen is not None and not w.touched:  # only the parts that changed since
                common = {id(p) for p in w.seen.parts} & {id(p) for p in ts.parts}
                scan = [p for p in ts.parts if id(p) not in common]
                # a part replaced by an update that keeps all its names loses none of them
                replaced = {
                    id(p.base) for p in scan if p.base is not None and is_subset(p.base.names, p.names)
                }
                rest = [q for q in w.seen.parts if id(q) not in common and id(q) not in replaced]
                now = {n for p in scan for n in p.items} if rest else set()
                gone = [n for q in rest for n in q.items if n not in now]
            else:
                scan = list(ts.parts)
                now = ts.names()
                gone = list(w.known)
            chunks: list[bytes] = []  # whole parts as their shared serialized entries, the rest one by one
            single: list[tuple[str, str, any_pb2.Any]] = []
            sent: dict[str, str | None] = {}
            whole: list[Part] = []
            rebased: list[Part] = []
            refused = False
            for p in scan:
                if self._whole(w, p):  # the client wants all of it and holds none: the shared bytes
                    chunks.append(p.delta_wire())
                    whole.append(p)
                    continue
                names: Iterable[str] = p.items
                base = p.base
                if (
                    base is not None
                    and not w.nacked
                    and (w.wildcard or p.changed <= w.subscribed)
                    and w.known.holds(base)
                ):  # an update of a part it holds whole: only the names that differ
                    names = p.changed
                    rebased.append(p)
                for name in names:
                    packed = p.items[name]
                    version = p.versions[name]
                    if self._wanted(w, name) and w.known.get(name) != version:
                        if w.nacked.get(name) == version:
                            refused = True  # the client keeps an older one: not reconciled
                            continue
                        single.append((name, version, packed))
                        sent[name] = version
            removed = [n for n in gone if n in w.known and n not in now and w.nacked.get(n, "") is not None]
            deferred = (
                t == CLUSTER
                and bool(removed)
                and not (self._settled(st, LISTENER, snap) and self._settled(st, ROUTE, snap))
            )
            if deferred:
                removed = []  # keep them until listeners and routes stop using them
            sent.update({n: None for n in removed})
            if not deferred and not refused:  # ``seen`` means the client holds all of it
                w.seen, w.touched = ts, False
            if not sent and not whole:
                continue
            nonce = f"d{next(self._nonce)}"
            head = discovery_pb2.DeltaDiscoveryResponse(
                type_url=t, system_version_info=ts.version, removed_resources=removed, nonce=nonce
            )
            if single:  # shared with every stream sending the same resources
                chunks.append(self._wires.delta(single))
            out.append(DeltaOut(t, nonce, [head.SerializeToString(), *chunks]))
            w.before = {n: w.known.get(n) for n in sent}
            for p in whole:  # names it had dropped stay dropped if Envoy refuses the part
                w.before.update(dict.fromkeys(p.names & w.known.names.keys()))
                w.known.add_part(p)
            for n, v in sent.items():
                if v is None:
                    w.known.pop(n, None)
                else:
                    w.known[n] = v
            for p in rebased:  # after the names: the part makes their entries redundant
                w.known.rebase(p)
            w.pending, w.sent, w.sent_parts, w.sent_rebased = nonce, sent, whole, rebased
        return out
