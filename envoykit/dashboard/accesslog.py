"""Recent access-log lines that concern a service, read from JSON-lines files.

Any file of one JSON object per line works: the JSON access logs of Envoy or of envoykit's telemetry,
the authz decision log. Only the tail of each file is read (``tail_bytes``). A line concerns a service
when one of its string values names the service or one of its workloads, or is a SPIFFE principal of
the service's account (``…/sa/<service>``), or a host ``<service>``, ``<service>:<port>`` or
``<service>.<namespace>…``.
Lines that are not request records (no ``path``, ``status``, ``response_code`` or ``method``) are
skipped, so a server's own log lines in the same file do not show.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REQUEST_KEYS = ("path", "status", "response_code", "method")


def _tail(path: Path, tail_bytes: int) -> list[str]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if size > tail_bytes else lines  # the first line may be cut


def _files(paths: Iterable[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file()))
        elif p.exists():
            out.append(p)
    return out


def _concerns(line: dict[str, Any], names: set[str]) -> bool:
    for v in line.values():
        if not isinstance(v, str):
            continue
        host = v.split(":", 1)[0]
        if v in names or host in names or host.split(".", 1)[0] in names:  # backend.default.svc…
            return True
        if "/sa/" in v and v.rsplit("/sa/", 1)[1] in names:
            return True
    return False


def recent_lines(
    paths: Iterable[Path], names: set[str], limit: int = 50, tail_bytes: int = 256 * 1024
) -> list[dict[str, Any]]:
    """The last ``limit`` request records of ``paths`` (files or folders) naming one of ``names``.

    Each record gets ``_file`` (the file's name). Order: oldest first by ``@timestamp`` (or ``time``:
    ISO 8601 UTC strings sort as time), so the newest lines of every file make the cut.
    """
    out: list[dict[str, Any]] = []
    for f in _files(paths):
        for text in _tail(f, tail_bytes):
            text = text.strip()
            if not text.startswith("{"):
                continue
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and any(k in line for k in REQUEST_KEYS) and _concerns(line, names):
                out.append({**line, "_file": f.name})
    out.sort(key=lambda line: str(line.get("@timestamp") or line.get("time") or ""))
    return out[-limit:]
