"""The control plane process: watch mesh.yaml → validate → translate → snapshots → ADS (+ SDS).

A change travels: file event → :func:`load_mesh` (schema, semantics) → :func:`translate` →
(optionally ``envoy --mode validate`` for one node per kind) → snapshots → pushed to every connected
Envoy. Any failure refuses the change whole (logged with file, line and field; counted in
``envoykit_config_reloads_total{component="control",result="error"}``) and the mesh keeps running its
last good config. An empty or truncated mesh, or one that drops a connected node, is refused the
same way (:mod:`envoykit.control.translate.guard`). Status (nodes, acknowledged versions, NACKs, last refused
change) is written to ``<state_dir>/control-status.json`` once a second, for ``envoykit status``, and
served with the topology and each node's resources as JSON on the metrics port (``/status``,
``/config/<node>``, see :mod:`envoykit.control.statusapi`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.message import Message

from envoykit.control.endpoint_update import assignments, recompile_endpoints, with_assignments
from envoykit.control.gcpause import gc_paused
from envoykit.control.model.loader import LoadedMesh, load_mesh
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.pki.sds import SecretProvider
from envoykit.control.statusapi import status_routes
from envoykit.control.translate.clusters import EndpointSource, model_endpoints
from envoykit.control.translate.guard import check_connected_kept, check_not_empty, virtual_hosts
from envoykit.control.translate.mtls import SpiffeMeshTls
from envoykit.control.translate.translation import MeshTls, Translation, translate
from envoykit.control.xds.ads import ADS_SERVICE, AdsServer, add_ads_to_server
from envoykit.control.xds.snapshot import Part, PartCache, Snapshot, SnapshotCache, TypeSet
from envoykit.control.xds.tokens import NodeTokens
from envoykit.control.xds.type_urls import SECRET
from envoykit.core.logs import get_logger
from envoykit.core.reload import WatchedConfig, names_path
from envoykit.core.server import AioGrpcServer


class SecretSource(Protocol):
    """Where node secrets come from (the CA's SDS provider): ``default`` and ``ROOTCA`` per node."""

    def secrets_for_node(self, node_id: str, spiffe_id: str) -> list[Message]:
        """The ``envoy.extensions.transport_sockets.tls.v3.Secret`` messages of ``node_id``."""
        ...


@dataclass(frozen=True)
class Compiled:
    """One accepted version of the mesh: the loaded model, its translation and packed snapshots."""

    loaded: LoadedMesh
    translation: Translation
    snapshots: dict[str, Snapshot]
    at: float
    files_digest: str = ""  # of the files the mesh references (:func:`referenced_digest`)
    road: str = "full"  # how it was made: ``full``, ``endpoints`` (mesh.yaml edit) or ``discovery``
    vhosts: Mapping[str, int] = field(default_factory=dict)  # virtual hosts per node (the guard's)


def referenced_digest(files: Iterable[Path]) -> str:
    """A digest of the contents of ``files`` (a directory: every file under it), so a reload knows
    whether a policy, Wasm module or certificate changed along with mesh.yaml."""
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        paths = sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f]
        for p in paths:
            h.update(str(p).encode() + b"\0")
            try:
                h.update(p.read_bytes())
            except OSError as exc:
                h.update(f"<{exc.errno}>".encode())
    return h.hexdigest()


def return_large_buffers_to_os() -> None:
    """Serve buffers of 256 KiB and more from their own mappings (glibc ``M_MMAP_THRESHOLD``), so
    memory goes back to the system when a push is written. Otherwise glibc raises that threshold on
    the first large free and keeps the freed megabyte-sized responses of 1,000 streams in its heap:
    measured at 5,000 services, 1.2 GB resident after every Envoy had acknowledged, 0.33 GB with it.
    A no-op where the C library is not glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD (malloc.h)
    except OSError:
        pass


def build_snapshots(
    translation: Translation, previous: Mapping[str, Snapshot] | None = None, *, release: bool = False
) -> dict[str, Snapshot]:
    """Pack a translation into one :class:`Snapshot` per node (shared groups are packed once).

    With ``previous`` (the snapshots being served), a group whose packed content equals a served
    part's is given that part object instead of its own copy: the new version holds memory only for
    what changed, type sets that did not change keep their version (nothing is pushed), and the ADS
    server skips shared parts whole when it computes what a stream lacks.

    ``release``: empty each node's groups once packed (the messages of 5,500 nodes weigh about
    110 MB at 5,000 services; what is served is the packed form, ``/config`` reads it from there).
    The shared groups stay in ``translation.shared`` for the endpoint-only road."""
    parts = PartCache(previous.values() if previous else ())
    out = {}
    for nid, cfg in translation.nodes.items():
        out[nid] = Snapshot({t: TypeSet(parts.part(g) for g in groups) for t, groups in cfg.groups.items()})
        if release:
            cfg.groups = {}
    return out


class ControlPlane:
    """Serves a mesh file to its Envoys over ADS, reloading it on change with keep-last-good.

    Args:
        mesh_path: the mesh.yaml.
        address: gRPC ``host:port`` to listen on (default: the model's ``control_plane.xds``; port 0
            picks a free one, see :attr:`port`).
        state_dir: where node tokens, CA files and the status file live (default: the model's
            ``control_plane.state_dir``, relative to mesh.yaml).
        require_tokens: check each stream's node token (see :mod:`envoykit.control.xds.tokens`).
        mtls: run the mesh CA (``<state_dir>/ca``) and serve each node's certificate over SDS; without
            it only services with ``mtls: DISABLE`` can be translated.
        tls, secrets: replace the CA-based mTLS builders / SDS source (tests).
        envoy_validate: run ``envoy --mode validate`` on one node per kind for every change (layer 3).
        watch: reload when mesh.yaml or the files it names change (else only on :meth:`reload`).
        metrics_port: serve Prometheus ``/metrics`` there (None: not at all).
        endpoints: where services' endpoints come from (the model's workloads by default; e.g.
            :class:`envoykit.k8s.discovery.KubernetesEndpoints`). When it changes, call
            :meth:`update_endpoints` (only endpoints move) or :meth:`reload`.
        json_access_log: the file Envoys write JSON access-log lines to when the mesh's
            ``extensions.access_log`` (stats transport) names none (``envoykit up`` gives its logs folder).

    Raises:
        ConfigError: the first load of the mesh fails (a control plane never starts without a good config).
    """

    def __init__(
        self,
        mesh_path: str | Path,
        *,
        address: str | None = None,
        state_dir: str | Path | None = None,
        require_tokens: bool = True,
        mtls: bool = True,
        tls: MeshTls | None = None,
        secrets: SecretSource | None = None,
        envoy_validate: bool = False,
        watch: bool = True,
        metrics_port: int | None = None,
        endpoints: EndpointSource = model_endpoints,
        json_access_log: str | None = None,
    ) -> None:
        self._log = get_logger("control")
        self.json_access_log = json_access_log
        self.endpoints = endpoints
        self.tls = tls if tls is not None or not mtls else SpiffeMeshTls()
        self.secrets = secrets
        self.envoy_validate = envoy_validate
        self.watch = watch
        self.cache = SnapshotCache()
        self._secret_sets: dict[str, TypeSet] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_apply: list[Callable[[Compiled], None]] = []
        self.config = WatchedConfig("control", mesh_path, self._compile, on_change=self._changed)
        mesh = self.current.loaded.mesh
        base = self.current.loaded.base_dir
        sd = Path(state_dir) if state_dir is not None else Path(mesh.control_plane.state_dir)
        self.state_dir = sd if sd.is_absolute() else base / sd
        self.tokens = NodeTokens(self.state_dir) if require_tokens else None
        self._provider: SecretProvider | None = None
        if mtls and secrets is None:
            ca = CertificateAuthority(self.state_dir, mesh.trust_domain)
            self._provider = SecretProvider(ca, on_change=self._secrets_changed)
            self.secrets = self._provider
        self.ads = AdsServer(self.cache, self.tokens, on_stream=self._stream_opened)
        self.address = address or str(mesh.control_plane.xds)
        self.server = AioGrpcServer(
            "control",
            self.address,
            metrics_port=metrics_port,
            # gRPC core cancels a call that waits longer than this (default 30 s) for the application
            # to take it; when 1,000 Envoys connect at once to a busy process (a shared machine, a
            # reload under way) that cancels streams that would be served a few seconds later, and
            # each cancelled Envoy reconnects, adding load. A stream waiting is harmless here.
            options=[("grpc.server_max_unrequested_time_in_server", 600)],
        )
        self.server.add_service(add_ads_to_server, self.ads, ADS_SERVICE)
        for prefix, route in status_routes(self).items():
            self.server.add_json_route(prefix, route)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._apply(self.current)

    @property
    def current(self) -> Compiled:
        """The version being served."""
        return self.config.current

    def reload(self) -> bool:
        """Load mesh.yaml again now (blocking; call from a thread); True when the new version was accepted."""
        return self.config.reload()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop serving ADS (after :meth:`start`)."""
        return self._loop

    @property
    def port(self) -> int:
        """The bound gRPC port (after :meth:`start`)."""
        return self.server.port

    def update_endpoints(self, services: Iterable[str] | None = None) -> int:
        """Push new endpoints of ``services`` (None: every service) from the endpoint source without
        translating anything else (:mod:`envoykit.control.endpoint_update`): only assignments that
        differ from the served ones are repacked, and each Envoy receives only those. Blocking (call
        from a thread, as :meth:`reload`); a reload and an update never interleave.

        Returns:
            how many ClusterLoadAssignments changed (0: nothing was pushed).

        Raises:
            whatever the endpoint source raises (the served endpoints stay).
        """
        count = 0

        def derive(cur: Compiled) -> Compiled | None:
            nonlocal count
            result = with_assignments(cur, assignments(cur.loaded.mesh, self.endpoints, services))
            if result is None:
                return None
            new, count = result
            return replace(new, road="discovery")

        t0 = time.perf_counter()
        with gc_paused():
            self.config.update(derive)
        if count:
            self._log.info(
                "endpoints updated", assignments=count, ms=round((time.perf_counter() - t0) * 1000, 1)
            )
        return count

    def on_apply(self, fn: Callable[[Compiled], None]) -> None:
        """Call ``fn`` (on the event loop) after each accepted version is pushed to the cache."""
        self._on_apply.append(fn)

    # -- load / apply --

    def _compile(self, path: Path) -> Compiled:
        serving = self.config.current if hasattr(self, "config") else None
        with gc_paused():
            loaded = load_mesh(path)
            mesh = loaded.mesh
            als = mesh.extensions.access_log
            if self.json_access_log and als.enabled and als.transport == "stats" and not als.json_log:
                als = als.model_copy(update={"json_log": self.json_access_log})
                mesh = mesh.model_copy(
                    update={"extensions": mesh.extensions.model_copy(update={"access_log": als})}
                )
                loaded = dataclasses.replace(loaded, mesh=mesh)
            digest = referenced_digest(loaded.files)
            if serving is not None and serving.files_digest == digest and self._same_gate(serving, loaded):
                fast = recompile_endpoints(serving, replace(loaded, doc=None), self.endpoints, self.tls)
                if fast is not None:  # only workloads' addresses changed (or nothing)
                    if self.envoy_validate:
                        from envoykit.control.translate.validate import validate_translation

                        validate_translation(fast.translation, str(path))
                    self._log.info("mesh change: endpoint-only road", nodes=len(fast.snapshots))
                    return replace(fast, files_digest=digest, road="endpoints")
            translation = translate(loaded.mesh, loaded.base_dir, self.tls, self.endpoints)
            check_not_empty(translation, str(path))
            check_connected_kept(
                translation, serving.vhosts if serving else None, self.connected_nodes(), str(path)
            )
            if self.envoy_validate:
                from envoykit.control.translate.validate import validate_translation

                validate_translation(translation, str(path))
            vhosts = virtual_hosts(translation)
            snapshots = build_snapshots(translation, serving.snapshots if serving else None, release=True)
        # the YAML node tree (kept for line numbers of errors found after validation) is done with
        return Compiled(replace(loaded, doc=None), translation, snapshots, time.time(), digest, vhosts=vhosts)

    @staticmethod
    def _same_gate(serving: Compiled, loaded: LoadedMesh) -> bool:
        """The authz gate document (a file or a ``/gate`` URL the server publishes) is the one the
        served version was translated with: otherwise the change needs the full road."""
        from envoykit.control.translate.authz_gate import load_gate_document

        doc = load_gate_document(loaded.mesh, loaded.base_dir)
        return (doc.digest if doc is not None else None) == serving.translation.gate_digest

    def connected_nodes(self) -> set[str]:
        """Node ids with an open ADS stream (safe to call from the reload thread)."""
        ads = getattr(self, "ads", None)  # None during the first load, in the constructor
        return {s.node_id for s in list(ads.streams.values())} if ads is not None else set()

    def _changed(self, compiled: Compiled) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._apply, compiled)
        else:
            self._apply(compiled)

    def _apply(self, compiled: Compiled) -> None:
        snaps = {nid: self._with_secrets(nid, s) for nid, s in compiled.snapshots.items()}
        self.cache.set_all(snaps)
        self._log.info("mesh applied", nodes=len(snaps), generation=self.config.generation)
        for fn in self._on_apply:
            fn(compiled)

    def _with_secrets(self, node_id: str, snap: Snapshot) -> Snapshot:
        ts = self._secret_sets.get(node_id)
        return snap.with_type(SECRET, ts) if ts is not None else snap

    def refresh_secrets(self, node_id: str) -> None:
        """Fetch ``node_id``'s secrets from the SDS source again and push them (after a rotation).

        Call on the event loop (``loop.call_soon_threadsafe`` from another thread).
        """
        node = self.current.translation.nodes.get(node_id)
        if self.secrets is None or node is None:
            return
        secrets = self.secrets.secrets_for_node(node_id, node.node.principal)
        named = {getattr(s, "name", ""): s for s in secrets}
        self._secret_sets[node_id] = TypeSet([Part(named)])
        base = self.current.snapshots.get(node_id)
        if base is not None:
            self.cache.set(node_id, self._with_secrets(node_id, base))

    def _secrets_changed(self, node_id: str) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self.refresh_secrets, node_id)

    def _stream_opened(self, node_id: str) -> None:
        if self.secrets is not None and node_id not in self._secret_sets:
            self.refresh_secrets(node_id)

    # -- status --

    def status(self) -> dict[str, Any]:
        """Nodes of the mesh, open streams with acknowledged versions, NACKs, the last refused change, the
        authz gate document in use."""
        cur = self.current
        return {
            "mesh": str(cur.loaded.path),
            "generation": self.config.generation,
            "applied_at": cur.at,
            "last_error": self.config.last_error,
            "last_refused_at": self.config.last_refused_at,
            "nodes": sorted(cur.snapshots),
            "authz_gate": cur.translation.gate_digest,  # digest of the gate document translated (None: none)
            "address": f"{self.address.rsplit(':', 1)[0]}:{self.port}",
            **self.ads.status(),
        }

    def write_status(self) -> None:
        """Write :meth:`status` to ``<state_dir>/control-status.json`` (atomically)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "control-status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, path)

    async def _status_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.write_status)
            except OSError as exc:
                self._log.warning("cannot write status", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _watch_files(self) -> None:
        from watchfiles import awatch

        while not self._stop.is_set():
            files = self.current.loaded.files
            # watch the folders, not the files: a file replaced by rename would drop a watch on it
            dirs = {f.parent for f in files if f.parent.is_dir()}
            folders = {f for f in files if f.is_dir()}  # every change inside counts (the policy dir)
            dirs |= folders
            if not dirs:
                await self._stop.wait()
                return
            async for changes in awatch(*dirs, stop_event=self._stop, debounce=100, recursive=False):
                inside = any(Path(os.path.realpath(p)).parent in folders for _, p in changes)
                if inside or any(names_path(changes, f) for f in files):
                    await asyncio.to_thread(self.config.reload)
                    break  # the referenced set may have changed

    async def _poll_gate(self, every_s: float = 1.0) -> None:
        """Follow a gate document served over HTTP (``extensions.authz.gate: http://…/gate``): reload
        when its digest differs from the one translated, or when it became unreadable (the reload then
        drops the gate: fail closed) — once two polls in a row agree, so that replicas behind one
        Service reloading at different moments do not make every proxy flip between their gates."""
        from envoykit.control.translate.authz_gate import gate_source
        from envoykit.core.authzgate import GateDocError, read_document

        seen: object = object()  # the differing digest of the last poll (a sentinel: none yet)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every_s)
            cur = self.current
            src = gate_source(cur.loaded.mesh, cur.loaded.base_dir)
            if src is None or not src.startswith(("http://", "https://")):
                continue
            try:
                digest: str | None = (await asyncio.to_thread(read_document, src)).digest
            except GateDocError:
                digest = None
            if digest == cur.translation.gate_digest:
                seen = object()
            elif digest != seen:
                seen = digest
            else:
                seen = object()
                await asyncio.to_thread(self.config.reload)

    # -- lifecycle --

    async def start(self) -> int:
        """Start serving ADS and watching the files; return the bound port."""
        self._loop = asyncio.get_running_loop()
        return_large_buffers_to_os()
        port = await self.server.start()
        self._tasks = [asyncio.create_task(self._status_loop())]
        if self.watch:
            self._tasks.append(asyncio.create_task(self.config.watch(self._stop)))
            self._tasks.append(asyncio.create_task(self._watch_files()))
            self._tasks.append(asyncio.create_task(self._poll_gate()))
        if self._provider is not None:
            self._tasks.append(asyncio.create_task(self._provider.run()))
        return port

    async def stop(self, grace: float = 1.0) -> None:
        """Stop watching, drain the gRPC server for ``grace`` seconds."""
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.stop(grace)
