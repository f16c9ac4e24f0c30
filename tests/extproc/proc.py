"""``envoykit extproc serve`` as a real process for tests (as the mesh runner starts it)."""

from __future__ import annotations

from tests.serverproc import ROOT, ServerProcess, StartServer

__all__ = ["ROOT", "start_extproc"]


def start_extproc(server_process: StartServer, *args: str) -> ServerProcess:
    """``envoykit extproc serve <args>`` with warning-level logs, started by the ``server_process`` fixture."""
    return server_process("extproc", "--log-level", "warning", *args)
