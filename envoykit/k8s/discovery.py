"""Endpoints from the Kubernetes API: EndpointSlices (and the Pods they point at) → EDS.

:class:`KubernetesEndpoints` is an :data:`envoykit.control.translate.clusters.EndpointSource`: for a service of
the mesh it returns the ready addresses of the EndpointSlices labelled
``kubernetes.io/service-name=<service>`` in the service's namespace. The port is the model's port of
the endpoint's workload (sidecar inbound, or the app), found through the Pod's
``envoykit.io/workload`` label; subsets (DestinationRule labels, or the version) select by that
workload, as they do for the model's own endpoints. An endpoint whose Pod is not known yet keeps the
EndpointSlice's port and belongs to no subset.

Each (namespace, resource) pair is one list-then-watch loop on its own thread, with the official
``kubernetes`` client (the API's "efficient detection of changes": list, then watch from the list's
``resourceVersion``, with bookmarks):

* a watch that ends (its ``timeoutSeconds``, a dropped connection) resumes from the last
  resourceVersion seen;
* ``410 Gone`` (as an HTTP status or an ERROR event: the version was compacted) relists;
* any other failure (API server gone, 5xx, refused connection) keeps every endpoint known so far and
  retries with backoff: a lost API server never empties the mesh's endpoints.

Changes are coalesced (``settle`` seconds) and reported through ``on_change``; :meth:`take_changed`
names the services whose endpoints may have moved since the last call (an EndpointSlice's service;
for a Pod whose labels changed, the services whose slices point at it; everything after a list), for
the control plane's endpoint-only road (``ControlPlane.update_endpoints``), which repacks only those
services' ClusterLoadAssignments and pushes only the ones that differ.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoykit.control.model.mesh import Mesh, Service
from envoykit.control.model.queries import endpoint_address, subset_members
from envoykit.control.model.types import Address
from envoykit.core.logs import get_logger
from envoykit.k8s import names

_log = get_logger("discovery")


@dataclass(frozen=True)
class _Endpoint:
    ips: tuple[str, ...]
    pod: str | None


@dataclass(frozen=True)
class _Slice:
    service: str
    port: int | None
    endpoints: tuple[_Endpoint, ...]


def _parse_slice(obj: dict[str, Any]) -> _Slice | None:
    """The parts of a discovery.k8s.io/v1 EndpointSlice envoykit uses (IPv4 slices only)."""
    if obj.get("addressType", "IPv4") != "IPv4":
        return None
    labels = (obj.get("metadata") or {}).get("labels") or {}
    ports = [p.get("port") for p in obj.get("ports") or [] if isinstance(p.get("port"), int)]
    eps = []
    for ep in obj.get("endpoints") or []:
        # conditions.ready: "nil should be interpreted as true" (EndpointConditions); a terminating
        # endpoint is not ready
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        ref = ep.get("targetRef") or {}
        eps.append(
            _Endpoint(tuple(ep.get("addresses") or ()), ref.get("name") if ref.get("kind") == "Pod" else None)
        )
    return _Slice(labels.get(names.SERVICE_NAME_LABEL, ""), ports[0] if ports else None, tuple(eps))


@dataclass
class WatchStatus:
    """One list-and-watch loop: its last resourceVersion, lists and relists done, the last error."""

    resource: str
    namespace: str
    resource_version: str | None = None
    lists: int = 0
    events: int = 0
    synced: bool = False
    last_error: str | None = None
    errors: int = 0


@dataclass
class _State:
    slices: dict[tuple[str, str], _Slice] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


class KubernetesEndpoints:
    """Endpoints of the mesh's services from EndpointSlices and Pods (see the module docstring).

    Args:
        api_client: a configured ``kubernetes.client.ApiClient`` (in-cluster or kubeconfig).
        namespaces: the namespaces to watch (the mesh's services' namespaces).
        on_change: called (on a helper thread) after changes settle.
        settle: seconds to wait for more changes before calling ``on_change``.
        watch_timeout: server-side ``timeoutSeconds`` of one watch request (it then resumes).
        backoff: seconds between retries after a failure (doubling up to 30).
    """

    def __init__(
        self,
        api_client: Any,
        namespaces: list[str],
        *,
        on_change: Callable[[], None] | None = None,
        settle: float = 0.1,
        watch_timeout: int = 300,
        backoff: float = 0.5,
    ) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self.namespaces = sorted(set(namespaces))
        self.on_change = on_change
        self.settle = settle
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self._lock = threading.Lock()
        self._state = _State()
        self._dirty: set[str] | None = set()  # services to look at again; None: all
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.status: list[WatchStatus] = []

    # -- the endpoint source --

    def __call__(self, mesh: Mesh, svc: Service, subset: str) -> list[Address]:
        """The ready endpoints of ``svc`` (or its ``subset``), sorted (stable versions for EDS)."""
        ns = mesh.ns(svc)
        with self._lock:
            slices = [s for (sns, _), s in self._state.slices.items() if sns == ns and s.service == svc.name]
            pods = self._state.pods
            workloads = {wl.name: wl for wl in svc.workloads}
            members = {w.name for w in subset_members(mesh, svc, subset)} if subset else None
            out: set[tuple[str, int]] = set()
            for s in slices:
                for ep in s.endpoints:
                    labels = pods.get((ns, ep.pod)) if ep.pod else None
                    wl = workloads.get((labels or {}).get(names.WORKLOAD_LABEL, ""))
                    if members is not None and (wl is None or wl.name not in members):
                        continue
                    port = endpoint_address(wl).port if wl is not None else s.port
                    if port is None:
                        continue
                    out.update((ip, port) for ip in ep.ips)
        return [Address(host=h, port=p) for h, p in sorted(out)]

    def take_changed(self) -> set[str] | None:
        """Names of the services whose endpoints may have changed since the last call (None: any of
        them, e.g. after a list), and start collecting again."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty

    def _mark(self, services: set[str] | None) -> None:
        # with self._lock held
        if services is None or self._dirty is None:
            self._dirty = None
        else:
            self._dirty |= services

    # -- lifecycle --

    def start(self) -> None:
        """Start one list-and-watch thread per (namespace, resource) and the change notifier."""
        for ns in self.namespaces:
            for resource in ("endpointslices", "pods"):
                st = WatchStatus(resource, ns)
                self.status.append(st)
                t = threading.Thread(target=self._loop, args=(st,), daemon=True, name=f"k8s-{resource}-{ns}")
                t.start()
                self._threads.append(t)
        t = threading.Thread(target=self._notifier, daemon=True, name="k8s-notify")
        t.start()
        self._threads.append(t)

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every loop has listed once; False on timeout (discovery keeps trying)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.synced for s in self.status):
                return True
            time.sleep(0.05)
        return all(s.synced for s in self.status)

    def stop(self) -> None:
        """Stop the loops (a watch in progress ends at its next event or timeout)."""
        self._stop.set()
        self._changed.set()

    # -- internals --

    def _list_fn(self, resource: str) -> Callable[..., Any]:
        if resource == "endpointslices":
            return self._discovery.list_namespaced_endpoint_slice  # type: ignore[no-any-return]
        return self._core.list_namespaced_pod  # type: ignore[no-any-return]

    def _selector(self, resource: str) -> str:
        return names.SERVICE_NAME_LABEL if resource == "endpointslices" else names.WORKLOAD_LABEL

    def _apply(self, resource: str, ns: str, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        with self._lock:
            if resource == "endpointslices":
                table: dict[tuple[str, str], Any] = self._state.slices
                value: Any = _parse_slice(obj)
            else:
                table = self._state.pods
                value = dict((obj.get("metadata") or {}).get("labels") or {})
            old = table.get((ns, name))
            if kind == "DELETED" or value is None:
                table.pop((ns, name), None)
                value = None
            else:
                table[(ns, name)] = value
            if old == value:
                return  # e.g. a Pod's status moved: its labels, all envoykit reads, did not
            if resource == "endpointslices":
                self._mark({s.service for s in (old, value) if s is not None})
            else:  # the pod's workload label decides its port and subsets
                self._mark(
                    {
                        s.service
                        for (sns, _), s in self._state.slices.items()
                        if sns == ns and any(ep.pod == name for ep in s.endpoints)
                    }
                )
        self._changed.set()

    def _relist(self, st: WatchStatus) -> None:
        resp = self._list_fn(st.resource)(
            st.namespace, label_selector=self._selector(st.resource), _preload_content=False
        )
        doc = json.loads(resp.data)
        items = doc.get("items") or []
        with self._lock:
            table: dict[tuple[str, str], Any] = (
                self._state.slices if st.resource == "endpointslices" else self._state.pods
            )
            for key in [k for k in table if k[0] == st.namespace]:
                del table[key]
            self._mark(None)
        for obj in items:
            self._apply(st.resource, st.namespace, "ADDED", obj)
        st.resource_version = (doc.get("metadata") or {}).get("resourceVersion")
        st.lists += 1
        st.synced = True
        self._changed.set()
        _log.info(
            "listed", resource=st.resource, namespace=st.namespace, items=len(items), rv=st.resource_version
        )

    def _watch(self, st: WatchStatus) -> None:
        from kubernetes import watch

        w = watch.Watch()
        stream = w.stream(
            self._list_fn(st.resource),
            st.namespace,
            label_selector=self._selector(st.resource),
            resource_version=st.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
        )
        for event in stream:
            if self._stop.is_set():
                w.stop()
                break
            obj = event.get("raw_object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(st.resource, st.namespace, event["type"], obj)
                st.events += 1
            if rv:
                st.resource_version = rv

    def _loop(self, st: WatchStatus) -> None:
        from kubernetes.client.exceptions import ApiException

        delay = self.backoff
        while not self._stop.is_set():
            try:
                if st.resource_version is None:
                    self._relist(st)
                self._watch(st)
                delay = self.backoff
                st.last_error = None
            except ApiException as exc:
                if exc.status == 410:  # compacted: start again from a fresh list
                    _log.info(
                        "watch expired (410 Gone), relisting", resource=st.resource, namespace=st.namespace
                    )
                    st.resource_version = None
                    continue
                self._failed(st, f"API {exc.status} {exc.reason}")
            except Exception as exc:  # connection refused/reset, timeouts: keep the last endpoints
                self._failed(st, f"{type(exc).__name__}: {exc}")
            else:
                continue
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 30.0)

    def _failed(self, st: WatchStatus, error: str) -> None:
        st.errors += 1
        st.last_error = error
        _log.warning(
            "API unreachable, keeping the last endpoints",
            resource=st.resource,
            namespace=st.namespace,
            error=error[:300],
        )

    def _notifier(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                return
            time.sleep(self.settle)  # let a burst of events settle into one change
            self._changed.clear()
            if self.on_change is not None:
                try:
                    self.on_change()
                except Exception as exc:
                    _log.error("applying discovered endpoints failed", error=str(exc))
