"""The dashboard's web server (aiohttp): the page, its static files and three JSON endpoints.

* ``GET /``: the page (``static/index.html``); scripts and styles from ``/static/`` — nothing from the
  network, so it works offline (the graph layout library is vendored, see ``static/vendor/README.md``).
* ``GET /api/state``: the last :func:`envoykit.dashboard.view.page_state`.
* ``GET /api/node/{id}``: one graph node's detail: the resources the control plane sends each of its
  Envoys (``/config/<node>``) and its recent access-log lines.
* ``GET /healthz``: 200 once the first poll is done, 503 before and while shutting down.
* ``GET /metrics``: the process's Prometheus metrics (polls by result).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from envoykit.dashboard.accesslog import recent_lines
from envoykit.dashboard.poller import Poller

STATIC = Path(__file__).parent / "static"
POLLER = web.AppKey("poller", Poller)
ACCESS_LOGS = web.AppKey("access_logs", list[Path])
DRAINING = web.AppKey("draining", list[bool])  # one flag, set on shutdown


def _names_of(node_id: str, state: dict[str, Any]) -> tuple[set[str], list[str]]:
    """Names a node's log lines carry, and the xDS node ids behind it (a service: its workloads')."""
    nodes = {n["id"]: n for n in state["graph"]["nodes"]}
    node = nodes.get(node_id)
    if node is None:
        return set(), []
    kind, _, name = node_id.partition(":")
    if kind == "svc":
        members = [n for n in nodes.values() if n.get("service") == name]
        names = {name, *(m["label"] for m in members)}
        return names, [m["xds_node"] for m in members if m.get("xds_node")]
    return {name}, [node["xds_node"]] if node.get("xds_node") else []


async def _state(request: web.Request) -> web.Response:
    poller = request.app[POLLER]
    if poller.state is None:
        return web.json_response({"error": "first poll not done yet"}, status=503)
    return web.json_response(poller.state)


async def _node(request: web.Request) -> web.Response:
    poller = request.app[POLLER]
    if poller.state is None or poller.session is None:
        return web.json_response({"error": "first poll not done yet"}, status=503)
    node_id = request.match_info["id"]
    names, xds_nodes = _names_of(node_id, poller.state)
    if not names:
        return web.json_response({"error": f"no node {node_id!r} in the graph"}, status=404)
    configs = await asyncio.gather(*(poller.control.get(poller.session, f"/config/{n}") for n in xds_nodes))
    files: list[Path] = request.app[ACCESS_LOGS]
    lines = await asyncio.to_thread(recent_lines, files, names)
    return web.json_response(
        {
            "id": node_id,
            "names": sorted(names),
            "config": [
                {"node": n, "resources": (body or {}).get("resources"), "error": err}
                for n, (body, err) in zip(xds_nodes, configs, strict=True)
            ],
            "access_log": lines,
            "access_log_files": [str(p) for p in request.app[ACCESS_LOGS]],
        }
    )


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _healthz(request: web.Request) -> web.Response:
    if request.app[DRAINING][0]:
        return web.Response(text="draining\n", status=503)
    ready = request.app[POLLER].state is not None
    return web.Response(text="ok\n" if ready else "starting\n", status=200 if ready else 503)


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(poller: Poller, access_logs: list[Path] | None = None) -> web.Application:
    """The aiohttp application; starts and stops ``poller`` with itself."""
    app = web.Application()
    app[POLLER] = poller
    app[ACCESS_LOGS] = list(access_logs or [])
    app[DRAINING] = [False]
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/node/{id}", _node)
    app.router.add_static("/static/", STATIC)

    async def lifecycle(_app: web.Application) -> Any:
        await poller.start()
        yield
        await poller.stop()

    async def draining(_app: web.Application) -> None:
        app[DRAINING][0] = True

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(draining)
    return app
