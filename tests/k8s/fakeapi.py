"""A small HTTP server that speaks the Kubernetes API's list and watch for EndpointSlices and Pods, as
the official client uses them (no Kubernetes API server runs on this machine).

What it implements, after the API conventions ("Efficient detection of changes"):

* ``GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`` and ``/api/v1/namespaces/{ns}/pods``:
  a List with ``metadata.resourceVersion`` (one counter for every object, as etcd's revision);
  ``labelSelector`` with an existence requirement (``key``) is honoured;
* the same with ``watch=true``: a chunked stream of JSON lines ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK,
  "object": …}`` for every change after ``resourceVersion``, held open until ``timeoutSeconds``;
* a ``resourceVersion`` older than the last :meth:`FakeApi.compact` gets an ERROR event with a 410
  ``Expired`` Status (what the API server sends once etcd compacted it);
* :meth:`FakeApi.outage` answers 503 to everything and drops open watches until it ends.

Every request is recorded in :attr:`FakeApi.requests` (path and query) for the tests' assertions.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PATHS = {
    "endpointslices": ("/apis/discovery.k8s.io/v1/namespaces/", "discovery.k8s.io/v1", "EndpointSlice"),
    "pods": ("/api/v1/namespaces/", "v1", "Pod"),
}


class FakeApi(ThreadingHTTPServer):
    """The fake API server; :attr:`url` is its base URL."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, str, dict[str, Any]]] = []  # rv, resource, ns, type, obj
        self.compacted = 0
        self.down = False
        self.generation = 0  # bumped to end every open watch
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()
        self.shutdown()
        self.server_close()

    # -- changing the cluster --

    def _put(self, resource: str, ns: str, obj: dict[str, Any], kind: str | None = None) -> None:
        with self.cond:
            self.rv += 1
            name = obj["metadata"]["name"]
            key = (resource, ns, name)
            _, api_version, k = PATHS[resource]
            obj = {"apiVersion": api_version, "kind": k, **obj}
            obj["metadata"] = {**obj["metadata"], "namespace": ns, "resourceVersion": str(self.rv)}
            event = kind or ("MODIFIED" if key in self.objects else "ADDED")
            if event == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self.events.append((self.rv, resource, ns, event, obj))
            self.cond.notify_all()

    def put_pod(self, ns: str, name: str, labels: dict[str, str], ip: str = "127.0.0.1") -> None:
        self._put("pods", ns, {"metadata": {"name": name, "labels": labels}, "status": {"podIP": ip}})

    def put_slice(
        self, ns: str, name: str, service: str, endpoints: list[tuple[str, str, bool]], port: int
    ) -> None:
        """An EndpointSlice of ``service``: ``endpoints`` are (ip, pod name, ready)."""
        self._put(
            "endpointslices",
            ns,
            {
                "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [ip],
                        "conditions": {"ready": ready, "serving": True, "terminating": not ready},
                        "targetRef": {"kind": "Pod", "name": pod, "namespace": ns},
                    }
                    for ip, pod, ready in endpoints
                ],
            },
        )

    def delete(self, resource: str, ns: str, name: str) -> None:
        obj = self.objects[(resource, ns, name)]
        self._put(resource, ns, {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}, "DELETED")

    def compact(self) -> None:
        """Forget every event so far (etcd compaction): older resourceVersions get 410 Gone; open
        watches end, so their clients come back with a version that is now too old."""
        with self.cond:
            self.compacted = self.rv
            self.generation += 1
            self.cond.notify_all()

    def outage(self, down: bool) -> None:
        """Start (True) or end (False) an outage: 503 for every request, open watches dropped."""
        with self.cond:
            self.down = down
            self.generation += 1
            self.cond.notify_all()

    def watches(self, resource: str) -> list[dict[str, str]]:
        """The query of every watch request for ``resource``, in order."""
        return [
            q for p, q in self.requests if p.endswith(resource) and q.get("watch") in ("true", "1", "True")
        ]

    def lists(self, resource: str) -> int:
        """How many list (not watch) requests ``resource`` got."""
        return sum(1 for p, q in self.requests if p.endswith(resource) and "watch" not in q)


class _Handler(BaseHTTPRequestHandler):
    server: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj).encode() + b"\n"
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        api = self.server
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api.requests.append((url.path, query))
        resource = next(
            (
                r
                for r, (prefix, _, _) in PATHS.items()
                if url.path.startswith(prefix) and url.path.endswith("/" + r)
            ),
            None,
        )
        if api.down:
            self._json(
                503,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "unavailable",
                    "reason": "ServiceUnavailable",
                    "code": 503,
                },
            )
            return
        if resource is None:
            self._json(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "not found",
                    "reason": "NotFound",
                    "code": 404,
                },
            )
            return
        ns = url.path[len(PATHS[resource][0]) :].split("/", 1)[0]
        selector = query.get("labelSelector", "")

        def selected(obj: dict[str, Any]) -> bool:
            return not selector or selector in (obj["metadata"].get("labels") or {})

        if query.get("watch") not in ("true", "1", "True"):
            with api.cond:
                items = [
                    o
                    for (r, n, _), o in sorted(api.objects.items())
                    if r == resource and n == ns and selected(o)
                ]
                rv = api.rv
            _, api_version, kind = PATHS[resource]
            self._json(
                200,
                {
                    "kind": f"{kind}List",
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
            return
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(query.get("timeoutSeconds") or 60)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")  # one watch per connection, as the client expects
        self.end_headers()
        try:
            with api.cond:
                generation = api.generation
                if since < api.compacted:
                    status = {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": f"too old resource version: {since} ({api.compacted})",
                        "reason": "Expired",
                        "code": 410,
                    }
                    self._chunk({"type": "ERROR", "object": status})
                    return
            while time.monotonic() < deadline:
                with api.cond:
                    if api.generation != generation or api.down:
                        break
                    pending = [
                        e
                        for e in api.events
                        if e[0] > since and e[1] == resource and e[2] == ns and selected(e[4])
                    ]
                    if not pending:
                        api.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                        continue
                for rv, _, _, kind, obj in pending:
                    self._chunk({"type": kind, "object": obj})
                    since = rv
        finally:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
