"""``envoykit wasm diff``: the same cases through the Wasm host and through a real Envoy."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from envoykit.core.envoy import EnvoyError
from envoykit.wasmdiff import CasesError, run_diff
from envoykit.wasmhost.errors import WasmHostError


@click.command("diff")
@click.argument(
    "filter_path", metavar="FILTER.wasm", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument(
    "cases_path", metavar="CASES.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--verbose", "-v", is_flag=True, help="Also print every identical case.")
def diff(filter_path: Path, cases_path: Path, verbose: bool) -> None:
    """Run every case in the host and in a real Envoy; exit 1 on any difference."""
    try:
        report = run_diff(filter_path, cases_path)
    except (CasesError, EnvoyError, WasmHostError) as exc:
        raise click.ClickException(str(exc)) from exc
    if verbose:
        for case in report.cases:
            mark = "same" if not case.differences else "DIFFERENT"
            click.echo(f"{mark:9} {case.name}: {case.host.status}")
    click.echo(report.summary())
    click.echo(f"host {report.host_seconds * 1000:.1f} ms, envoy {report.envoy_seconds * 1000:.1f} ms")
    sys.exit(0 if report.ok else 1)
