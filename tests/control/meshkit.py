"""Helpers for control-plane tests: a control plane on its own event-loop thread, mesh files on free
ports, and mesh Envoys started from `envoykit bootstrap`'s output."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from google.protobuf.json_format import MessageToDict

from envoykit.control.model.nodes import mesh_nodes
from envoykit.control.model.types import Address
from envoykit.control.server import ControlPlane
from envoykit.control.translate.bootstrap import bootstrap
from envoykit.core.envoy import EnvoyProcess
from envoykit.core.net import FreePorts

T = TypeVar("T")


_PORTS = FreePorts()


def addr() -> str:
    """A free loopback address ``127.0.0.1:<port>``, never one this test process handed out before
    (the kernel may offer a just-released port again, and a mesh must not use one twice)."""
    return f"127.0.0.1:{_PORTS.take()}"


def sidecar() -> dict[str, str]:
    """Free inbound, outbound and admin addresses for a sidecar."""
    return {"inbound": addr(), "outbound": addr(), "admin": addr()}


def workload(name: str, version: str, port: int, **extra: Any) -> dict[str, Any]:
    """A workload whose app listens on ``port`` (an EchoServer), with a sidecar on free ports."""
    return {"name": name, "version": version, "address": f"127.0.0.1:{port}", "sidecar": sidecar(), **extra}


def write_mesh(path: Path, mesh: dict[str, Any]) -> Path:
    """Write ``mesh`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump(mesh, sort_keys=False))
    return path


class ControlPlaneThread:
    """A :class:`ControlPlane` running on an event loop in a background thread (the tests are sync)."""

    def __init__(self, mesh_path: Path, **kw: Any) -> None:
        kw.setdefault("address", "127.0.0.1:0")
        kw.setdefault("state_dir", mesh_path.parent / "state")
        self._kw = kw
        self.mesh_path = mesh_path
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.cp: ControlPlane = self.call(lambda: ControlPlane(mesh_path, **kw))
        self.port = self.run(self.cp.start())

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the control plane's loop and return its result."""
        fut: Future[T] = Future()

        def go() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(go)
        return fut.result(30)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the control plane's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def reload(self) -> bool:
        """Reload mesh.yaml now (as the file watcher would); True when accepted."""
        return self.cp.config.reload()

    def stop(self) -> None:
        self.run(self.cp.stop(0.2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def xds(self) -> Address:
        return Address(host="127.0.0.1", port=self.port)


@contextmanager
def control_plane(mesh_path: Path, **kw: Any) -> Iterator[ControlPlaneThread]:
    cpt = ControlPlaneThread(mesh_path, **kw)
    try:
        yield cpt
    finally:
        cpt.stop()


def node_bootstrap(cpt: ControlPlaneThread, node_id: str, *, delta: bool = False) -> dict[str, Any]:
    """The bootstrap `envoykit bootstrap` would write for ``node_id``, pointing at ``cpt``."""
    node = mesh_nodes(cpt.cp.current.loaded.mesh)[node_id]
    token = cpt.cp.tokens.token_for(node_id) if cpt.cp.tokens else None
    return MessageToDict(bootstrap(node, cpt.xds, token, delta=delta), preserving_proto_field_name=True)


def start_nodes(
    envoy: Callable[..., EnvoyProcess], cpt: ControlPlaneThread, *node_ids: str, delta: bool = False
) -> list[EnvoyProcess]:
    """Start a real Envoy per node id, fed by ``cpt`` (incremental xDS with ``delta``); each is ready
    (listeners warmed) on return."""
    return [envoy(node_bootstrap(cpt, nid, delta=delta), name=nid.replace("~", "-")) for nid in node_ids]


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1) -> None:
    """Poll ``pred`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def get(url: str, host: str | None = None, **kw: Any) -> httpx.Response:
    """One HTTP GET (no keep-alive reuse between calls, no proxies from the environment)."""
    headers = dict(kw.pop("headers", {}) or {})
    if host:
        headers["host"] = host
    return httpx.get(url, headers=headers, timeout=kw.pop("timeout", 10), trust_env=False, **kw)
