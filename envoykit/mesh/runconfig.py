"""The run config: how ``envoykit up`` starts what mesh.yaml does not describe.

mesh.yaml says where each workload listens and which extensions run; it does not say which program
serves a workload, nor where the policies and rate limits live. The run config (default
``apps/run.yaml`` beside mesh.yaml) says that, the way a Procfile does::

    apps:                        # per service: the command of each of its workloads
      backend:
        command: ["{python}", "{dir}/backend.py", "--port", "{port}", "--version", "{version}"]
    servers:                     # extra arguments and metrics port of each extension server
      authz: {args: ["--policy-dir", "{mesh_dir}/policies"], metrics_port: 9101}
      ratelimit: {args: ["--config-dir", "{mesh_dir}/ratelimit"], metrics_port: 9102}
      telemetry: {args: [], metrics_port: 9103}          # envoykit telemetry serve (access logs)
      extproc_telemetry: {args: ["--telemetry"], metrics_port: 9105}  # ext_proc telemetry, if used
      processors: {}             # user processor name -> {args, metrics_port}
    control_plane: {args: [], metrics_port: 9100}
    demo: {token_key: "{mesh_dir}/demo-issuer/key.pem"}  # the key envoykit demo signs its JWT with

Placeholders in commands and args: ``{python}`` (this Python), ``{dir}`` (the run config's folder),
``{mesh_dir}`` (mesh.yaml's folder), and for apps ``{port}``, ``{host}``, ``{version}``, ``{workload}``,
``{service}`` and ``{outbound}`` (``host:port`` of the workload sidecar's outbound listener).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envoykit.core import ConfigError, load_yaml_file, validation_error_to_config_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppCommand(_Strict):
    """The command run for each workload of one service (argv, with placeholders)."""

    command: list[str] = Field(min_length=1)


class ServerRun(_Strict):
    """Extra arguments of an extension server and the port of its Prometheus ``/metrics``."""

    args: list[str] = []
    metrics_port: int = Field(default=0, ge=0, le=65535)


class Servers(_Strict):
    """Per extension server: ``authz``, ``ratelimit``, ``telemetry`` (the access-log server),
    ``extproc_telemetry`` (the ext_proc telemetry option) and user ``processors`` by name."""

    authz: ServerRun = ServerRun(metrics_port=9101)
    ratelimit: ServerRun = ServerRun(metrics_port=9102)
    telemetry: ServerRun = ServerRun(metrics_port=9103)
    extproc_telemetry: ServerRun = ServerRun(args=["--telemetry"], metrics_port=9105)
    processors: dict[str, ServerRun] = {}


class DemoRun(_Strict):
    """What ``envoykit demo`` needs beyond mesh.yaml: ``token_key``, the private key (PEM) it signs its
    test JWT with (placeholders as in args; empty: the JWT check has no key)."""

    token_key: str = ""


class RunConfig(_Strict):
    """The whole run config (see the module docstring)."""

    apps: dict[str, AppCommand] = {}
    servers: Servers = Servers()
    control_plane: ServerRun = ServerRun(metrics_port=9100)
    demo: DemoRun = DemoRun()


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config.

    Raises:
        ConfigError: unreadable file, bad YAML, or a bad field (names file, line and field).
    """
    doc = load_yaml_file(path)
    try:
        return RunConfig.model_validate(doc.data or {})
    except ValidationError as err:
        raise validation_error_to_config_error(err, doc, model=RunConfig) from err


def expand(args: list[str], values: dict[str, str], where: str) -> list[str]:
    """Fill ``{name}`` placeholders of ``args`` from ``values``.

    Raises:
        ConfigError: a placeholder with no value (``where`` names the field).
    """
    out = []
    for a in args:
        try:
            out.append(a.format(**values))
        except (KeyError, IndexError, ValueError) as exc:
            known = ", ".join("{" + k + "}" for k in sorted(values))
            raise ConfigError(f"unknown placeholder in {a!r} ({exc}); known: {known}", field=where) from exc
    return out
