"""Shared helpers of the mesh tests: sample-app components and process-group inspection."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from envoykit.core import free_port
from envoykit.mesh import Component, Probe

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "examples" / "apps"


def backend(name: str = "backend", version: str = "v1", port: int | None = None) -> Component:
    """The sample backend on a free port, probed on /healthz."""
    port = port or free_port()
    return Component(
        name=name,
        kind="app",
        command=[sys.executable, str(APPS / "backend.py"), "--port", str(port), "--version", version],
        probe=Probe("http", port, "/healthz", timeout_s=30),
        address=f"http://127.0.0.1:{port}",
    )


def frontend(backend_port: int, depends_on: tuple[str, ...] = ("backend",)) -> Component:
    """The sample frontend calling the backend directly (no sidecar), on a free port."""
    port = free_port()
    return Component(
        name="frontend",
        kind="app",
        command=[
            sys.executable,
            str(APPS / "frontend.py"),
            "--port",
            str(port),
            "--backend",
            f"http://127.0.0.1:{backend_port}",
        ],
        probe=Probe("http", port, "/healthz", timeout_s=30),
        depends_on=depends_on,
        address=f"http://127.0.0.1:{port}",
    )


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, Any]:
    """GET ``url`` and return (status, parsed JSON body); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, body.decode(errors="replace")


def group_members(pgid: int) -> list[int]:
    """PIDs (from /proc) whose process group is ``pgid``, zombies excluded."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out
