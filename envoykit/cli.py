"""The ``envoykit`` command. Thin: each sub-command lives in its room and is imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name → "module:attribute" of a click command in the room that owns it
COMMANDS: dict[str, str] = {
    "authz": "envoykit.authz.cli:authz",
    "token": "envoykit.authz.cli:token",
    "ratelimit": "envoykit.ratelimit.cli:ratelimit",
    "extproc": "envoykit.extproc.cli:extproc",
    "telemetry": "envoykit.telemetry.cli:telemetry",
    "wasm": "envoykit.cli:wasm",
    "control": "envoykit.control.cli:control",
    "validate": "envoykit.mesh.cli:validate",  # builds the example Wasm modules first, as up
    "bootstrap": "envoykit.control.cli:bootstrap",
    "envoy": "envoykit.control.cli:envoy",
    "ca": "envoykit.control.pki.cli:ca",
    "k8s": "envoykit.k8s.cli:k8s",
    "compose": "envoykit.mesh.cli:compose",
    "up": "envoykit.mesh.cli:up",
    "status": "envoykit.mesh.cli:status",
    "logs": "envoykit.mesh.cli:logs",
    "demo": "envoykit.mesh.cli:demo",
    "dashboard": "envoykit.dashboard.cli:dashboard",
}
#: ``envoykit wasm``: one group over three rooms (the host, the differential check, the example builds).
WASM_COMMANDS: dict[str, str] = {
    "run": "envoykit.wasmhost.cli:run",
    "diff": "envoykit.wasmdiff.cli:diff",
    "build": "envoykit.wasmbuild.cli:build",
}


class _LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when invoked (fast ``--help`` and start).

    ``commands`` maps each sub-command name to the ``"module:attribute"`` of its click command.
    """

    def __init__(self, *args: Any, commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = COMMANDS if commands is None else commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            cmd: Any = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise click.ClickException(f"'{cmd_name}' is not available: {exc}") from exc
        return cmd  # type: ignore[no-any-return]

    def invoke(self, ctx: click.Context) -> Any:
        from envoykit.core.bind import AddressInUse

        try:
            return super().invoke(ctx)
        except AddressInUse as exc:  # any server: exit 1 naming the address, no traceback
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_LazyGroup)
@click.version_option(package_name="envoykit")
def main() -> None:
    """envoykit: extend Envoy in Python (authz, extproc, ratelimit, Wasm host, control plane, mesh)."""


@click.group(cls=_LazyGroup, commands=WASM_COMMANDS)
def wasm() -> None:
    """Test Proxy-Wasm filters: run one request in the host, diff against Envoy, build examples."""


if __name__ == "__main__":
    main()
