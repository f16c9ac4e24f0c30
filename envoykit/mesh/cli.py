"""``envoykit up``, ``status``, ``logs``, ``demo`` and ``compose``: the local mesh from the command line."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from envoykit.core import ConfigError
from envoykit.core.output import emit, output_option
from envoykit.mesh.plan import Plan
from envoykit.mesh.state import StateDir, default_state_dir, pid_alive

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (plan, status, logs). Default: $ENVOYKIT_STATE_DIR or .envoykit/mesh.",
)


def _console(stderr: bool = False) -> Console:
    """A rich console; when output is not a terminal (a log, a pipe) it is 160 columns wide so the
    tables stay on one line per row."""
    # emoji off: error texts carry "file:100:" which rich would turn into an emoji code
    console = Console(stderr=stderr, emoji=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=160, emoji=False)
    return console


def _state(state_dir: Path | None) -> StateDir:
    return StateDir(state_dir or default_state_dir())


def _read_plan(state: StateDir) -> Plan:
    try:
        return state.read_plan()
    except FileNotFoundError:
        raise click.ClickException(
            f"no mesh has run from {state.root} (no plan.json); run `envoykit up`"
        ) from None


@click.command()
@click.argument("mesh", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_state_dir_option
@click.option(
    "--run-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="How to start the apps and servers (default: apps/run.yaml beside MESH).",
)
@click.option("--free-ports", is_flag=True, help="Move every port of the mesh to a free one (for tests).")
@click.option("--prometheus/--no-prometheus", default=True, help="Run Prometheus when it is installed.")
@click.option("--prometheus-port", type=int, default=9090, show_default=True)
@click.option("--dashboard/--no-dashboard", default=True, help="Serve the live mesh page.")
@click.option("--dashboard-port", type=int, default=9095, show_default=True)
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Run a plan.json (from an earlier run's state directory) instead of planning MESH.",
)
@click.option("--grace", type=float, default=10.0, show_default=True, help="Seconds from SIGTERM to SIGKILL.")
@click.option(
    "--only",
    default=None,
    metavar="NAME",
    help="Plan the mesh, then become component NAME alone (how each container of compose/ starts).",
)
@click.option(
    "--public-ingress", is_flag=True, help="Serve the ingress gateway on 0.0.0.0 (inside a container)."
)
def up(
    mesh: Path | None,
    state_dir: Path | None,
    run_config: Path | None,
    free_ports: bool,
    prometheus: bool,
    prometheus_port: int,
    dashboard: bool,
    dashboard_port: int,
    plan_file: Path | None,
    grace: float,
    only: str | None,
    public_ingress: bool,
) -> None:
    """Run the local mesh described by MESH (mesh.yaml) until Ctrl-C or SIGTERM.

    Starts the control plane, the extension servers, every app with its sidecar Envoy, the gateways,
    Prometheus and the dashboard (its URL is printed when the mesh is ready), each as its own process, in dependency order; restarts crashed ones with backoff; stops
    everything on exit.
    """
    from envoykit.mesh.runner import AlreadyRunning, check_not_running, run_plan

    console = _console(stderr=True)
    state = _state(state_dir)
    try:
        # before planning: a plan rewrites files (bootstraps, a mesh copy) a running mesh is using
        if only is None:
            check_not_running(state)
    except AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from exc
    if plan_file is not None:
        plan = Plan.read(plan_file)
    elif mesh is not None:
        from envoykit.mesh.planner import PlanOptions, plan_mesh

        state.prepare()
        opts = PlanOptions(
            run_config=run_config,
            free_ports=free_ports,
            prometheus=prometheus and only is None,
            prometheus_port=prometheus_port,
            dashboard=dashboard,
            dashboard_port=dashboard_port,
            public_ingress=public_ingress,
        )
        try:
            plan = plan_mesh(mesh, state, opts)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        raise click.UsageError("give MESH (a mesh.yaml) or --plan")
    if only is not None:
        _become(plan, only)
    try:
        code = run_plan(plan, state, cwd=Path.cwd(), console=console, grace_s=grace)
    except AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def _become(plan: Plan, name: str) -> None:
    """Replace this process with component ``name`` of ``plan`` (never returns)."""
    try:
        comp = plan.get(name)
    except KeyError:
        names = ", ".join(c.name for c in plan.components)
        raise click.ClickException(f"no component {name!r}; components: {names}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(comp.command[0], comp.command, {**os.environ, **comp.env, "PYTHONUNBUFFERED": "1"})


@click.command()
@_state_dir_option
@output_option()
def status(state_dir: Path | None, output: str) -> None:
    """Show the components of the running mesh, their addresses, state and live health.

    Exits 0 when the runner is up and every component answers its probe, 1 otherwise (also with
    ``-o json|yaml``, whose document is described in docs/mesh.md).
    """
    from envoykit.mesh.runner import live_health
    from envoykit.mesh.table import control_summary, status_doc, status_table

    state = _state(state_dir)
    plan = _read_plan(state)
    try:
        st = state.read_status()
    except FileNotFoundError:
        raise click.ClickException(f"no status in {state.root}") from None
    console = _console()
    running = pid_alive(st.runner_pid) and st.state not in ("stopped", "failed")
    if not running:
        st.state = st.state if st.state in ("stopped", "failed") else "stopped (runner gone)"
    health = live_health(plan) if running else {c.name: False for c in plan.components}
    ok = running and all(health.values())
    if output != "text":
        control: dict[str, Any] | None = None
        control_file = Path(plan.info.get("control_status", ""))
        if running and control_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                control = json.loads(control_file.read_text())
        emit(status_doc(plan, st, health, state.root, control, ok), output)
        sys.exit(0 if ok else 1)
    console.print(status_table(plan, st, health))
    if st.error:
        console.print(st.error, style="red", markup=False)
    control_status = Path(plan.info.get("control_status", ""))
    if running and control_status.is_file():
        with contextlib.suppress(OSError, ValueError):
            for line in control_summary(json.loads(control_status.read_text())):
                console.print(line)  # markup for the labels; the summary escapes what came from files
    if running and plan.ingress:
        console.print(f"ingress: {plan.ingress}")
    if running and plan.info.get("dashboard"):
        console.print(f"dashboard: {plan.info['dashboard']}")
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("name")
@_state_dir_option
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="How many last lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With NAME 'access': read this JSON access log instead of the running mesh's.",
)
def logs(name: str, state_dir: Path | None, lines: int, follow: bool, file_: Path | None) -> None:
    """Print the log of component NAME (see `envoykit status` for the names).

    `envoykit logs access` prints the mesh's JSON access logs (one line per request, written by the
    telemetry server from every Envoy's access-log stream; rotated files are followed).
    """
    if name == "access" and file_ is not None:
        path = file_
    else:
        state = _state(state_dir)
        plan = _read_plan(state)
        names = [c.name for c in plan.components]
        if name == "access" and name not in names:
            from envoykit.mesh.planner import ACCESS_LOG

            path = state.logs / ACCESS_LOG
            if "telemetry" not in names:
                raise click.ClickException("this mesh runs no telemetry server (extensions.access_log)")
        elif name not in names:
            raise click.ClickException(f"no component {name!r}; components: {', '.join(names)}, access")
        else:
            path = state.log_path(name)
    if not path.exists():
        raise click.ClickException(f"{name} has no log yet ({path})")
    _tail(path, lines, follow)


def _tail(path: Path, lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of ``path``; with ``follow``, new ones as they come, reopening the
    file when it is replaced (size-based rotation renames it)."""
    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    try:
        tail = f.read().decode(errors="replace").splitlines()[-lines:] if lines > 0 else []
        for line in tail:
            click.echo(line)
        ino = os.fstat(f.fileno()).st_ino
        while follow:
            chunk = f.read()
            if chunk:
                click.echo(chunk.decode(errors="replace"), nl=False)
                continue
            time.sleep(0.2)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino != ino:
                    f.close()
                    f = open(path, "rb")  # noqa: SIM115
                    ino = os.fstat(f.fileno()).st_ino
    finally:
        f.close()


@click.command()
@click.argument("mesh", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compose/docker-compose.yml"),
    show_default=True,
)
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 when OUTPUT differs from the generated file."
)
def compose(mesh: Path, output: Path, check: bool) -> None:
    """Generate docker-compose.yml for MESH (run from the repository root: the image holds the repository)."""
    import tempfile
    from urllib.parse import urlsplit

    from envoykit.mesh.compose import relative_mesh_path, render_compose
    from envoykit.mesh.planner import PlanOptions, plan_mesh

    try:
        rel = relative_mesh_path(mesh, Path.cwd())
    except ValueError:
        raise click.ClickException(
            f"{mesh} is not inside the current directory (the repository root)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="envoykit-compose-") as tmp:
        state = StateDir(tmp)
        state.prepare()
        try:
            plan = plan_mesh(mesh, state, PlanOptions(prometheus=False, build_wasm=False))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
    text = render_compose(plan, rel, urlsplit(plan.ingress).port or 8080, plan.info["control_state_dir"])
    if check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            raise click.ClickException(
                f"{output} is not what `envoykit compose {rel}` generates; regenerate it"
            )
        click.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    click.echo(f"wrote {output} ({len(plan.components)} components)")


@click.command()
@_state_dir_option
def demo(state_dir: Path | None) -> None:
    """Send real traffic through the running mesh's ingress and report what happened.

    Allowed and denied requests with reasons, 429s from the rate limit, the canary split measured, the
    Wasm header, and per-service request counts and latency percentiles read back from the telemetry.
    Exits 1 when a check does not hold.
    """
    from envoykit.mesh.demo import SCENARIOS, DemoTarget, wait_for_ingress
    from envoykit.mesh.report import checks_table, decisions_table, telemetry_table

    state = _state(state_dir)
    plan = _read_plan(state)
    try:
        target = DemoTarget.from_plan(plan)
        wait_for_ingress(target, timeout_s=5)
    except (KeyError, TimeoutError) as exc:
        raise click.ClickException(f"{exc}; is `envoykit up` running from {state.root}?") from None
    console = _console()
    checks = []
    with console.status("sending traffic ...") as spinner:
        for scenario in SCENARIOS:
            spinner.update(f"{scenario.__name__} ...")
            checks.append(scenario(target))
    console.print(checks_table(checks))
    figures = {c.name: c.figures for c in checks if c.figures}
    if "telemetry" in figures:
        console.print(telemetry_table(figures["telemetry"]))
    if "decisions" in figures:
        console.print(decisions_table(figures["decisions"]))
    sys.exit(0 if all(c.ok for c in checks) else 1)


def _validate_command() -> click.Command:
    """``envoykit validate`` as the control plane defines it, after the Wasm modules the mesh names
    are located or built the way ``envoykit up`` does (:func:`ensure_wasm_modules`): on a fresh
    clone the demo filter exists only as C source, and validation must not depend on having run
    ``up`` first."""
    from envoykit.control.cli import validate as control_validate
    from envoykit.control.model.loader import load_mesh
    from envoykit.mesh.wasm import ensure_wasm_modules

    inner = control_validate.callback
    assert inner is not None

    def callback(**kwargs: object) -> object:
        mesh = kwargs.get("mesh")
        if isinstance(mesh, Path) and mesh.is_file():
            try:
                loaded = load_mesh(mesh)
            except ConfigError:
                loaded = None  # the control plane's validate reports it, in its output format
            try:
                if loaded is not None:
                    ensure_wasm_modules(loaded)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return inner(**kwargs)

    return click.Command(
        name=control_validate.name,
        params=list(control_validate.params),
        callback=callback,
        help=control_validate.help,
        short_help=control_validate.short_help,
    )


validate = _validate_command()
