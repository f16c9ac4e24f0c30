"""``envoykit wasm build``: build the example filters of ``examples/wasm``."""

from __future__ import annotations

import click

from envoykit.wasmbuild.build import BuildError, build_example, list_examples


@click.command("build")
@click.argument("names", nargs=-1)
def build(names: tuple[str, ...]) -> None:
    """Build example filters from examples/wasm (all of them without NAMES); print their paths."""
    try:
        for name in names or tuple(list_examples()):
            click.echo(f"{name}\t{build_example(name)}")
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
