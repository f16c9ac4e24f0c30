"""Publish the native gate of the policy the server serves (``--gate-file``, ``GET /gate``).

On start and after every reload the server accepted, the gate document of the *current* policy
(:func:`~envoykit.authz.gate.gate_document`) is rebuilt, written atomically to the gate file (when
given) and served on the metrics port at ``/gate``. A refused reload changes nothing, so the published
gate always belongs to the policy being served. Fail closed: if the document cannot be built, a
document with ``no_gate`` is published instead (the control plane then removes the gate and every
request goes to the server); the same when the server runs with ``--dry-run`` (allow everything),
which a gate deciding natively would contradict.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from envoykit.authz.gate import gate_document
from envoykit.authz.loader import Policy
from envoykit.core.authzgate import GateDocument, Where, with_digest, write_document
from envoykit.core.logs import get_logger
from envoykit.core.reload import WatchedConfig

log = get_logger("authz")


def _no_gate(message: str) -> GateDocument:
    return with_digest(GateDocument(no_gate=Where(message=message)))


class GatePublisher:
    """Keeps the published gate in step with ``watched`` (call :meth:`publish` after each swap).

    Args:
        watched: the server's policy.
        gate_file: where to write the document (None: only ``/gate``).
        dry_run: the server allows everything: publish ``no_gate``.
    """

    def __init__(self, watched: WatchedConfig[Policy], gate_file: Path | None, dry_run: bool = False) -> None:
        self._watched = watched
        self._file = gate_file
        self._dry_run = dry_run
        self._lock = threading.Lock()
        self._written = False
        self.document: GateDocument | None = None

    def publish(self, _changed: Any = None) -> None:
        """Rebuild and publish the gate of the current policy (reloads may overtake each other: the
        current one is always what is published last).

        Raises:
            OSError: the gate file cannot be written at start (the server does not start); later, a
                failed write removes the file instead (the control plane then drops the gate).
        """
        with self._lock:
            policy = self._watched.current
            if self._dry_run:
                doc = _no_gate("the authz server runs with --dry-run: every request must reach it")
            else:
                try:
                    doc = gate_document(policy)
                except Exception as exc:  # never leave the old gate published for a new policy
                    log.exception("native gate not compiled: publishing no gate")
                    doc = _no_gate(f"the gate could not be compiled: {type(exc).__name__}: {exc}")
            self.document = doc  # /gate follows the policy served, whatever happens to the file
            if self._file is not None:
                self._write(doc)
            log.info(
                "native gate published",
                digest=doc.digest[:12],
                gate=doc.no_gate is None,
                reason=doc.no_gate.message if doc.no_gate else None,
                file=str(self._file) if self._file else None,
            )

    def _write(self, doc: GateDocument) -> None:
        assert self._file is not None
        try:
            write_document(doc, self._file)
        except OSError as exc:
            if not self._written:
                raise  # at start: the server does not start without its gate file
            # the old document must not outlive the policy it belongs to: remove it (no gate)
            log.error(
                "cannot write the gate file: removing it (no gate)", file=str(self._file), error=str(exc)
            )
            try:
                self._file.unlink(missing_ok=True)
            except OSError as exc2:
                log.error("cannot remove the stale gate file either", file=str(self._file), error=str(exc2))
            return
        self._written = True

    def route(self, rest: str) -> tuple[int, Any]:
        """The ``/gate`` JSON route of the metrics port."""
        doc = self.document
        if rest not in ("", "/") or doc is None:
            return 404, {"error": "no such gate document"}
        return 200, doc.model_dump(mode="json")
