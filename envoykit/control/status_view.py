"""``envoykit control status``: the control plane's ``control-status.json`` for people and scripts.

The file (written once a second by :meth:`envoykit.control.server.ControlPlane.write_status`) keeps
epoch seconds; this view turns them into ISO 8601 and adds whether the writer is alive (the file is
fresh: rewritten within :data:`STALE_AFTER_S`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from envoykit.core.output import iso_time

STALE_AFTER_S = 5.0


def load_status(path: Path) -> dict[str, Any]:
    """The status document at ``path`` with ISO 8601 times, ``running`` and ``updated_at``.

    Raises:
        OSError: no status file (the control plane never ran with this state directory).
    """
    raw = path.read_text()
    mtime = path.stat().st_mtime
    try:
        doc: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise OSError(0, f"not a status file ({exc})") from exc
    for key in ("applied_at", "last_refused_at"):
        if key in doc:
            doc[key] = iso_time(doc[key])
    for nack in doc.get("nacks") or []:
        nack["at"] = iso_time(nack.get("at"))
    return {
        "status_file": str(path.absolute()),
        "running": time.time() - mtime < STALE_AFTER_S,
        "updated_at": iso_time(mtime),
        **doc,
    }


def status_lines(doc: dict[str, Any]) -> list[str]:
    """A short text form of :func:`load_status`'s document."""
    state = "running" if doc["running"] else f"NOT running (status last written {doc['updated_at']})"
    lines = [
        f"control plane: {state}, xDS on {doc.get('address', '?')}",
        f"mesh:          {doc.get('mesh', '?')} (generation {doc.get('generation')}, "
        f"applied {doc.get('applied_at')})",
    ]
    if doc.get("authz_gate"):
        lines.append(f"authz gate:    document {doc['authz_gate'][:12]} (pushed with the generation above)")
    if doc.get("last_error"):
        at = f" at {doc['last_refused_at']}" if doc.get("last_refused_at") else ""
        lines.append(f"last change refused{at} (serving the last good version): {doc['last_error']}")
    streams = {s["node"]: s for s in doc.get("streams") or []}
    lines.append(f"nodes ({len(doc.get('nodes') or [])}, {len(streams)} connected):")
    for node in doc.get("nodes") or []:
        s = streams.get(node)
        acked = " ".join(f"{k}={v}" for k, v in sorted((s or {}).get("acked", {}).items()))
        lines.append(f"  {node:<28} {'connected' if s else 'not connected':<14} {acked}")
    for n in doc.get("nacks") or []:
        lines.append(f"NACK {n['node']} {n['type']} v{n['version']} at {n['at']}: {n['message']}")
    return lines
