"""The ADS server: ``envoy.service.discovery.v3.AggregatedDiscoveryService`` on grpc.aio, State of the
World (this module) and incremental (:mod:`envoykit.control.xds.delta`).

Protocol, per stream and per type (Envoy docs, "xDS REST and gRPC protocol"):

* the first request names the node; when node tokens are on, the stream's ``x-envoykit-node-token``
  metadata must verify for that node id, otherwise the stream ends with PERMISSION_DENIED;
* a request whose ``response_nonce`` is not the last nonce sent for its type is stale and ignored;
* a request with ``error_detail`` is a NACK: recorded (node, type, version, message), logged, counted in
  ``envoykit_xds_nacks_total``; that version is never sent again to this stream (no loop) and Envoy
  keeps the last version it accepted;
* a response is sent when Envoy waits for one (after its request) and the snapshot version or the
  requested names differ from what it has; only requested names that exist are sent (all for the
  wildcard types CDS and LDS);
* pushes go in make-before-break order CDS → EDS → LDS → RDS → SDS: listeners and routes wait until
  Envoy has acknowledged every cluster and its endpoints (warm), and clusters that a change removes
  stay in CDS until Envoy has acknowledged the listeners and routes that stop using them;
* Listener and Cluster responses carry the node's whole set; the other types (EDS, RDS, SDS) carry
  only what the stream lacks: newly requested names and resources whose version changed (the xDS
  protocol's "Grouping Resources into Responses"), so an endpoint change sends one
  ClusterLoadAssignment to each Envoy, not every one of them;
* resources are serialized once per :class:`~envoykit.control.snapshot.Part` for every stream (a
  response is the concatenation of shared ``resources`` bytes, its header and its nonce: protobuf
  merges concatenated fields), and the bytes being written to all streams together are bounded
  (``send_budget``), so a thousand Envoys syncing at once do not each hold a copy in gRPC's buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from prometheus_client import Counter, Gauge

from envoykit.control.xds.delta import DeltaProtocol, DeltaState
from envoykit.control.xds.snapshot import (
    Snapshot,
    SnapshotCache,
    TypeSet,
    WireCache,
    changed_resources,
    resources_wire,
)
from envoykit.control.xds.tokens import NODE_TOKEN_HEADER, NodeTokens
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT, TYPE_ORDER
from envoykit.core.logs import get_logger

PUSHES = Counter("envoykit_xds_pushes", "xDS responses sent, by type.", ["type"])
NACKS = Counter("envoykit_xds_nacks", "xDS responses refused by Envoy (NACK), by type.", ["type"])
CONNECTED = Gauge("envoykit_xds_connected_streams", "Open ADS streams.")
WILDCARD_TYPES = {CLUSTER, LISTENER}
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_WAKE = object()
_END = object()


@dataclass
class NackRecord:
    """A refused push: which node, type and version, Envoy's message, when (unix seconds)."""

    node_id: str
    type_url: str
    version: str
    message: str
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``status``)."""
        return {
            "node": self.node_id,
            "type": SHORT.get(self.type_url, self.type_url),
            "version": self.version,
            "message": self.message,
            "at": self.at,
        }


@dataclass
class _Watch:
    names: frozenset[str] | None = None  # None: wildcard
    waiting: bool = False  # Envoy sent a request we have not answered
    sent_version: str | None = None
    sent_nonce: str = ""
    # what the client holds from us: the (shared) type set of our last response and the names it
    # was subscribed to then (None: nothing known, send everything asked for)
    sent: TypeSet | None = None
    sent_names: frozenset[str] | None = None
    kept: dict[str, any_pb2.Any] = field(default_factory=dict)  # removed clusters still sent
    acked_version: str = ""
    nacked_version: str | None = None


class SendBudget:
    """Bounds the bytes of responses sent and not yet answered (ACK or NACK), all streams together.

    A grpc.aio write returns once gRPC's transport has taken a copy of the message, long before a
    slow reader has it; without a bound, 1,000 Envoys connecting together each hold a megabyte-sized
    CDS response in the server's buffers (measured: 2.4 GB at 5,000 services). A response holds its
    size until the stream's next request names its nonce or the stream ends; a stream waits for room
    before it writes. A hold that is not answered within ``hold_timeout`` seconds stops counting, so
    a few clients that stopped reading do not stall every other one.
    """

    def __init__(self, limit: int, hold_timeout: float = 30.0) -> None:
        self.limit = limit
        self.hold_timeout = hold_timeout
        self.used = 0
        self._holds: dict[int, tuple[float, int]] = {}  # token → (expiry, bytes)
        self._tokens = itertools.count(1)
        self._freed = asyncio.Event()

    async def acquire(self, n: int) -> int:
        """Wait for room for ``n`` bytes (at most the whole budget); returns the hold's token."""
        n = min(n, self.limit)
        while self.used + n > self.limit:
            self._expire()
            if self.used + n <= self.limit:
                break
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 1.0)
        token = next(self._tokens)
        self._holds[token] = (time.monotonic() + self.hold_timeout, n)
        self.used += n
        return token

    def release(self, token: int) -> None:
        """End a hold (an unknown or expired token is ignored)."""
        hold = self._holds.pop(token, None)
        if hold is not None:
            self.used -= hold[1]
            self._freed.set()

    def _expire(self) -> None:
        now = time.monotonic()
        for token, (expiry, _) in list(self._holds.items()):
            if expiry < now:
                self.release(token)


@dataclass
class StreamState:
    """One open ADS stream: its node and, per type, what was sent and acknowledged."""

    node_id: str
    peer: str
    watches: dict[str, _Watch] = field(default_factory=dict)
    delta: DeltaState | None = None
    last_push: float | None = None  # epoch seconds of the last response written on this stream

    def acked(self) -> dict[str, str]:
        """Acknowledged version per short type name (CDS, EDS, ...); for a delta stream, the number of
        resources the client holds."""
        if self.delta is not None:
            return {SHORT.get(t, t): str(len(w.known)) for t, w in self.delta.watches.items()}
        return {SHORT.get(t, t): w.acked_version for t, w in self.watches.items()}


@dataclass
class _Out:
    """A response to write: its type (for metrics), the message or its :class:`_Frame`, its nonce."""

    type_url: str
    payload: Any
    nonce: str = ""


@dataclass
class _Session:
    state: StreamState
    on_request: Callable[[Any], None]
    responses: Callable[[Snapshot], list[_Out]]


class _Frame:
    """A response as the byte chunks it is made of (mostly shared part wires), joined only when gRPC
    serializes it; serializing gives up the chunks, so neither this module nor gRPC's handler (which
    keeps the last item it wrote until the next one) holds an idle stream's last response, and a
    stream waiting for the send budget holds no copy either."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def size(self) -> int:
        """Bytes on the wire."""
        return sum(len(c) for c in self.chunks)


def _serialize(payload: Any) -> bytes:
    if isinstance(payload, _Frame):
        chunks, payload.chunks = payload.chunks, []
        return b"".join(chunks)
    return payload if isinstance(payload, bytes) else payload.SerializeToString()  # type: ignore[no-any-return]


def add_ads_to_server(servicer: AdsServer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``envoy.service.discovery.v3.AggregatedDiscoveryService``; responses may
    be messages or :class:`_Frame` chunks (shared serialized parts)."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves each node its snapshot from ``cache`` over ADS (SotW).

    Args:
        cache: the snapshots per node.
        tokens: when given, every stream must carry the node's token (see :mod:`identity`).
        on_stream: called with the node id when a stream for it opens (the control plane uses it to
            add the node's secrets to its snapshot before the first response).
        send_budget: bytes of responses in gRPC's write buffers at once, all streams together
            (:class:`SendBudget`).
    """

    def __init__(
        self,
        cache: SnapshotCache,
        tokens: NodeTokens | None = None,
        on_stream: Any = None,
        send_budget: int = 128 * 1024 * 1024,
    ) -> None:
        self.cache = cache
        self.tokens = tokens
        self.on_stream = on_stream
        self.nacks: dict[tuple[str, str], NackRecord] = {}
        self._wires = WireCache()
        self._delta = DeltaProtocol(self._wires)
        self._budget: SendBudget | None = None  # made on the serving loop
        self._budget_limit = send_budget
        # shared across streams: one set object per distinct subscription, one diff per change
        self._name_sets: dict[frozenset[str], frozenset[str]] = {}
        # chunks, not joined: a node's RDS is its own part plus the shared 5,000-host ``outbound``
        # part, which must stay one object for every node, not a copy per node
        self._diffs: dict[tuple[Any, ...], tuple[int, list[bytes]]] = {}
        self.streams: dict[int, StreamState] = {}
        self._nonce = itertools.count(1)
        self._log = get_logger("control.ads")

    def status(self) -> dict[str, Any]:
        """Connected nodes with their acknowledged versions, and outstanding NACKs."""
        return {
            "streams": [
                {
                    "node": s.node_id,
                    "peer": s.peer,
                    "delta": s.delta is not None,
                    "acked": s.acked(),
                    "last_push": s.last_push,
                }
                for s in self.streams.values()
            ],
            "nacks": [n.as_dict() for n in self.nacks.values()],
        }

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """The SotW ADS stream (see the module docstring for the protocol)."""

        def make(node_id: str, peer: str) -> _Session:
            state = StreamState(node_id=node_id, peer=peer)
            return _Session(state, lambda r: self._on_request(state, r), lambda s: self._responses(state, s))

        async for resp in self._serve(request_iterator, context, make):
            yield resp

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """The incremental ADS stream (see :mod:`envoykit.control.xds.delta`)."""

        def make(node_id: str, peer: str) -> _Session:
            state = StreamState(node_id=node_id, peer=peer, delta=DeltaState(node_id))
            assert state.delta is not None
            delta = state.delta

            def on_request(req: discovery_pb2.DeltaDiscoveryRequest) -> None:
                error = self._delta.on_request(delta, req)
                if error is not None:
                    self._record_nack(node_id, req.type_url, req.response_nonce, error)
                elif req.response_nonce:
                    self.nacks.pop((node_id, req.type_url), None)

            return _Session(
                state,
                on_request,
                lambda s: [
                    _Out(r.type_url, _Frame(r.chunks), r.nonce) for r in self._delta.responses(delta, s)
                ],
            )

        async for resp in self._serve(request_iterator, context, make):
            yield resp

    async def _serve(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext, make: Any
    ) -> AsyncIterator[Any]:
        """Shared stream plumbing: read requests on a task, check the node token, wake on snapshot
        changes, hand requests and snapshots to the protocol, write its responses."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self._budget is None:
            self._budget = SendBudget(self._budget_limit)
        budget = self._budget
        in_flight: dict[str, int] = {}  # nonce → the budget's hold until its ACK/NACK

        async def read() -> None:
            try:
                # context.read(), not ``async for`` over request_iterator: gRPC's iterator keeps the
                # last message it yielded in its frame until the next one arrives
                while (req := await context.read()) is not grpc.aio.EOF:
                    hold = in_flight.pop(req.response_nonce, 0)
                    if hold:
                        budget.release(hold)
                    queue.put_nowait(req)
                    # an idle stream must not keep its last request: a sidecar's EDS ACK names
                    # 5,500 clusters (~0.4 MB parsed); 1,000 of them held 0.4 GB after an endpoint push
                    del req
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                queue.put_nowait(_END)

        reader = asyncio.create_task(read())
        first = await queue.get()
        if first is _END:
            return
        node_id = first.node.id
        if not node_id:
            reader.cancel()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        if self.tokens is not None:
            meta = {k: v for k, v in (context.invocation_metadata() or ())}
            token = meta.get(NODE_TOKEN_HEADER)
            if not self.tokens.verify(node_id, token if isinstance(token, str) else None):
                self._log.warning("stream refused: bad node token", node=node_id, peer=context.peer())
                reader.cancel()
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"node token does not verify for {node_id}"
                )
        session: _Session = make(node_id, context.peer())
        key = id(session)
        self.streams[key] = session.state
        CONNECTED.inc()
        cancel = self.cache.watch(node_id, lambda: queue.put_nowait(_WAKE))
        self._log.info(
            "stream opened", node=node_id, peer=session.state.peer, delta=session.state.delta is not None
        )
        try:
            if node_id not in self.cache.node_ids():
                self._log.warning("node is not in the mesh; it gets no resources", node=node_id)
            if self.on_stream is not None:
                try:
                    self.on_stream(node_id)
                except Exception as exc:  # e.g. the CA cannot issue: serve the rest, say why
                    self._log.error("cannot prepare the node's secrets", node=node_id, error=str(exc))
            item: Any = first
            del first
            while item is not _END:
                snap = self.cache.get(node_id)
                if item is not _WAKE:
                    session.on_request(item)
                item = None  # not kept while the stream waits (see read)
                out = session.responses(snap)
                while out:  # popped, so that an idle stream keeps no reference to what it sent
                    resp = out.pop(0)
                    PUSHES.labels(SHORT.get(resp.type_url, resp.type_url)).inc()
                    session.state.last_push = time.time()
                    payload, nonce = resp.payload, resp.nonce
                    del resp
                    size = payload.size() if isinstance(payload, _Frame) else payload.ByteSize()
                    in_flight[nonce] = await budget.acquire(size)
                    yield payload
                    del payload
                item = await queue.get()
        finally:
            for hold in in_flight.values():
                budget.release(hold)
            in_flight.clear()
            cancel()
            reader.cancel()
            del self.streams[key]
            CONNECTED.dec()
            self._log.info("stream closed", node=node_id)

    # -- protocol --

    def _on_request(self, st: StreamState, req: discovery_pb2.DiscoveryRequest) -> None:
        t = req.type_url
        w = st.watches.get(t)
        if w is None:
            w = st.watches[t] = _Watch()
        elif req.response_nonce and req.response_nonce != w.sent_nonce:
            return  # stale: Envoy has not seen our latest response of this type yet
        if req.response_nonce and req.response_nonce == w.sent_nonce:
            if req.HasField("error_detail"):
                self._nack(st, t, w, req.error_detail.message)
            else:
                w.acked_version = req.version_info
                self.nacks.pop((st.node_id, t), None)
        elif req.version_info:
            w.acked_version = req.version_info  # a reconnecting Envoy tells what it runs
        names = frozenset(req.resource_names)
        if t in WILDCARD_TYPES and (not names or "*" in names):
            w.names = None
        else:  # every sidecar asks for the same 5,000 EDS names: keep one set object for all
            if len(self._name_sets) > 1024:
                self._name_sets.clear()
            w.names = self._name_sets.setdefault(names, names)
        w.waiting = True

    def _nack(self, st: StreamState, t: str, w: _Watch, message: str) -> None:
        w.nacked_version = w.sent_version
        w.sent = w.sent_names = None  # it kept what it had before: send everything it asks next time
        self._record_nack(st.node_id, t, w.sent_version or "", message)

    def _record_nack(self, node_id: str, t: str, version: str, message: str) -> None:
        rec = NackRecord(node_id, t, version, message)
        self.nacks[(node_id, t)] = rec
        NACKS.labels(SHORT.get(t, t)).inc()
        self._log.error(
            "envoy refused config (NACK)",
            node=node_id,
            type=SHORT.get(t, t),
            version=rec.version,
            error=message,
        )

    def _routes_current(self, st: StreamState, snap: Snapshot) -> bool:
        for t in (LISTENER, ROUTE):
            w = st.watches.get(t)
            if w is not None and w.acked_version != snap.get(t).version:
                return False
        return True

    def _clusters_ready(self, st: StreamState, snap: Snapshot) -> bool:
        """True when Envoy has accepted every cluster of ``snap`` and the endpoints of each (so they are
        warm): only then may listeners and routes that use them be pushed."""
        cds = st.watches.get(CLUSTER)
        cds_ts = snap.get(CLUSTER)
        if cds_ts.parts and (
            cds is None
            or cds.sent is None
            or cds.sent.version != cds_ts.version
            or cds.acked_version != cds.sent_version
        ):
            return False
        eds_ts = snap.get(ENDPOINT)
        if not any(p.items for p in eds_ts.parts):
            return True
        eds = st.watches.get(ENDPOINT)
        return (
            eds is not None
            and eds.sent is not None
            and eds.sent.version == eds_ts.version
            and eds.acked_version == eds.sent_version
            and eds.sent_names is not None
            and eds_ts.covered_by(eds.sent_names)
        )

    def _wildcard(self, st: StreamState, t: str, w: _Watch, snap: Snapshot) -> tuple[str, list[bytes], int]:
        """A Listener/Cluster response: the node's whole set, plus (make before break) clusters the
        change removed while listeners and routes may still use them. Returns (version, the
        ``resources`` bytes, how many resources are kept)."""
        ts = snap.get(t)
        kept: dict[str, any_pb2.Any] = {}
        if (t == CLUSTER and w.sent is not None and w.sent.version != ts.version) or w.kept:
            gone = _removed(w.sent, w.kept, ts)
            if gone and not self._routes_current(st, snap):
                kept = gone
        w.kept = kept
        version = f"{ts.version}+keep{len(kept)}" if kept else ts.version
        wires = [p.wire() for p in ts.parts]
        if kept:
            wires.append(resources_wire(kept.values()))
        return version, wires, len(kept)

    def _named(self, w: _Watch, t: str, snap: Snapshot) -> tuple[str, list[bytes]] | None:
        """An EDS/RDS/SDS response: what the stream lacks of the names it asked for (None: nothing).
        The diff is computed once for every stream in the same position (shared parts and names)."""
        ts = snap.get(t)
        names = w.names or frozenset()
        key = (t, w.sent.parts if w.sent is not None else None, w.sent_names, ts.parts, names)
        hit = self._diffs.get(key)
        if hit is None:
            if len(self._diffs) > 256:
                self._diffs.clear()
            if w.sent is None:  # full: whole parts where the subscription covers them
                count, wires = 0, []
                for p in ts.parts:
                    if p.names <= names:
                        count += len(p.items)
                        wires.append(p.wire())
                    else:
                        chosen = [a for n, a in p.items.items() if n in names]
                        count += len(chosen)
                        wires.append(resources_wire(chosen))
                hit = (count, wires)
            else:
                changed = changed_resources(w.sent, w.sent_names, ts, names)
                hit = (len(changed), [self._wires.sotw(changed.values())])
            self._diffs[key] = hit
        count, chunks = hit
        if not count and w.sent is not None:
            # nothing it asked for changed: it holds this version as much as the last one it acked
            if w.acked_version == w.sent_version:
                w.sent, w.sent_names = ts, w.names
                w.sent_version = w.acked_version = ts.version
            return None
        return ts.version, list(chunks)

    def _responses(self, st: StreamState, snap: Snapshot) -> list[_Out]:
        out: list[_Out] = []
        for t in [*TYPE_ORDER, *(t for t in st.watches if t not in TYPE_ORDER)]:
            w = st.watches.get(t)
            if w is None or not w.waiting:
                continue
            if t in (LISTENER, ROUTE) and not self._clusters_ready(st, snap):
                continue  # make before break: wait until the clusters they use are warm
            ts = snap.get(t)
            if w.names is None:
                if w.sent is not None and ts.version == w.sent.version and not w.kept:
                    continue
                version, wires, _ = self._wildcard(st, t, w, snap)
                if version in (w.sent_version, w.nacked_version):
                    continue
            else:
                if w.sent is not None and ts is w.sent and w.names is w.sent_names:
                    continue
                if ts.version == w.nacked_version:
                    continue
                named = self._named(w, t, snap)
                if named is None:
                    continue
                version, wires = named
            nonce = str(next(self._nonce))
            head = discovery_pb2.DiscoveryResponse(version_info=version, type_url=t, nonce=nonce)
            out.append(_Out(t, _Frame([head.SerializeToString(), *wires]), nonce))
            w.sent_version, w.sent_nonce, w.sent, w.sent_names = version, nonce, ts, w.names
            w.waiting = False
        return out


def _removed(sent: TypeSet | None, kept: dict[str, any_pb2.Any], now: TypeSet) -> dict[str, any_pb2.Any]:
    """Resources the client holds from ``sent`` (and ``kept``) that ``now`` no longer has."""
    if sent is None:
        return {n: a for n, a in kept.items() if not any(n in p.names for p in now.parts)}
    common = {id(p) for p in sent.parts} & {id(p) for p in now.parts}
    new_names: set[str] = set()
    for p in now.parts:
        if id(p) not in common:
            new_names |= p.names
    out: dict[str, any_pb2.Any] = {}
    for q in sent.parts:
        if id(q) not in common:
            out.update((n, a) for n, a in q.items.items() if n not in new_names)
    out.update(
        (n, a) for n, a in kept.items() if n not in new_names and not any(n in p.names for p in now.parts)
    )
    return out
