"""``envoykit wasm run``: run a Proxy-Wasm filter on one request in the host."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from envoykit.wasmhost.abi import LogLevel
from envoykit.wasmhost.errors import WasmHostError

_LEVELS = [lv.name.lower() for lv in LogLevel]


def _text_or_file(value: str | None) -> str:
    """``@path`` reads the file; anything else is the text itself."""
    if value and value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc}") from exc
    return value or ""


def _header(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    out = []
    for item in values:
        name, sep, val = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not 'name: value'", param_hint=option)
        out.append((name.strip().lower(), val.strip()))
    return out


@click.command("run")
@click.argument(
    "filter_path", metavar="FILTER.wasm", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--config", "configuration", default="", help="Plugin configuration (text, or @file).")
@click.option("--vm-config", "vm_configuration", default="", help="VM configuration (text, or @file).")
@click.option("--root-id", default="", help="Plugin root_id.")
@click.option("--vm-id", default="", help="VM id (scopes shared data and queues).")
@click.option("--request", "request_line", default="GET /", show_default=True, help="'METHOD PATH'.")
@click.option("-H", "--header", "headers", multiple=True, help="Request header 'name: value' (repeatable).")
@click.option("--authority", default="example.com", show_default=True, help="Request :authority (Host).")
@click.option("--body", default="", help="Request body (text, or @file).")
@click.option("--upstream-status", default=200, show_default=True, type=click.IntRange(100, 599))
@click.option(
    "--upstream-header", "upstream_headers", multiple=True, help="Upstream response header (repeatable)."
)
@click.option("--upstream-body", default="", help="Upstream response body (text, or @file).")
@click.option("--callout", "callouts", multiple=True, metavar="CLUSTER=STATUS[:BODY]",
              help="Answer HTTP callouts to CLUSTER (repeatable); others fail as resets.")  # fmt: skip
@click.option("--log-level", type=click.Choice(_LEVELS), default="info", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def run(
    filter_path: Path,
    configuration: str,
    vm_configuration: str,
    root_id: str,
    vm_id: str,
    request_line: str,
    headers: tuple[str, ...],
    authority: str,
    body: str,
    upstream_status: int,
    upstream_headers: tuple[str, ...],
    upstream_body: str,
    callouts: tuple[str, ...],
    log_level: str,
    as_json: bool,
) -> None:
    """Print what FILTER.wasm does to one request and its upstream answer.

    A filter that traps gets Envoy's answer (a 503, empty body); the trap and what the filter
    logged are printed, and the exit status is 1.
    """
    from envoykit.wasmhost.exchange import HttpRequest, HttpResponse, run_exchange
    from envoykit.wasmhost.host import Host

    method, _, path = request_line.strip().partition(" ")
    if not method or not path.startswith("/"):
        raise click.BadParameter(f"{request_line!r} is not 'METHOD /path'", param_hint="--request")
    answers: dict[str, Any] = {}
    for item in callouts:
        cluster, sep, rest = item.partition("=")
        status, _, cbody = rest.partition(":")
        if not sep or not status.isdigit():
            raise click.BadParameter(f"{item!r} is not CLUSTER=STATUS[:BODY]", param_hint="--callout")
        answers[cluster] = HttpResponse(int(status), [], cbody.encode())
    request = HttpRequest(
        method.upper(), path.strip(), authority, _header(headers, "-H"), _text_or_file(body).encode()
    )
    upstream = HttpResponse(upstream_status, _header(upstream_headers, "--upstream-header"),
                            _text_or_file(upstream_body).encode())  # fmt: skip
    host = Host(log_level=LogLevel[log_level.upper()])
    try:
        plugin = host.load(
            filter_path,
            configuration=_text_or_file(configuration),
            vm_configuration=_text_or_file(vm_configuration),
            root_id=root_id,
            vm_id=vm_id,
        )
        start_logs = list(plugin.logs)
        outcome = run_exchange(plugin, request, upstream, callouts=answers)
    except WasmHostError as exc:
        raise click.ClickException(str(exc)) from exc
    result: dict[str, Any] = {
        "abi_version": plugin.module.abi_version.value,
        "start_logs": [[r.level.name.lower(), r.message] for r in start_logs],
        "upstream_request": None
        if outcome.upstream_headers is None
        else {
            "headers": outcome.upstream_headers.items(),
            "body": (outcome.upstream_body or b"").decode(errors="replace"),
        },
        "local_response": None
        if outcome.local_response is None
        else {"status": outcome.local_response.status, "details": outcome.local_response.details},
        "response": {
            "status": outcome.status,
            "headers": outcome.headers.items(),
            "body": outcome.body.decode(errors="replace"),
        },
        "reset": outcome.reset,
        "stalled": outcome.stalled,
        "failure": None
        if outcome.failure is None
        else {
            "callback": outcome.failure.callback,
            "reason": outcome.failure.reason,
            "message": str(outcome.failure),
        },
        "logs": [[r.level.name.lower(), r.message] for r in outcome.logs],
        "metrics": {
            m.name: m.value if m.type.name != "HISTOGRAM" else m.values for m in host.metrics.by_name.values()
        },
        "actions": [[name, int(action)] for name, action in outcome.actions],
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        sys.exit(1 if outcome.failure is not None else 0)
    click.echo(f"filter {filter_path.name} (ABI {result['abi_version']})")
    for level, msg in result["start_logs"]:
        click.echo(f"  start log [{level}] {msg}")
    if outcome.upstream_headers is None:
        click.echo("upstream: not reached")
    else:
        click.echo("upstream request:")
        for k, v in outcome.upstream_headers.items():
            click.echo(f"  {k}: {v}")
        if outcome.upstream_body:
            click.echo(f"  body: {outcome.upstream_body!r}")
    if outcome.failure is not None:
        # Envoy fails the VM: this stream and (fail closed) every later one get a 503.
        click.echo(f"filter failed: {outcome.failure}")
        for record in outcome.logs:
            if record.level >= LogLevel.ERROR:
                click.echo(f"  it logged [{record.level.name.lower()}] {record.message}")
    if outcome.local_response is not None:
        click.echo(f"local response: {outcome.local_response.status} ({outcome.local_response.details})")
    if outcome.reset:
        click.echo("stream reset by the filter")
    elif outcome.stalled:
        click.echo("stream stalled: the filter paused and nothing continued it (Envoy would time out)")
    else:
        click.echo(f"response: {outcome.status}")
        for k, v in outcome.headers.items():
            click.echo(f"  {k}: {v}")
        click.echo(f"  body: {outcome.body!r}")
    for name, action in outcome.actions:
        click.echo(f"{name} -> {action}")
    for level, msg in result["logs"]:
        click.echo(f"log [{level}] {msg}")
    for name, value in result["metrics"].items():
        click.echo(f"metric {name} = {value}")
    if outcome.failure is not None:
        sys.exit(1)  # the whole outcome is printed; the exit status still says the filter failed
