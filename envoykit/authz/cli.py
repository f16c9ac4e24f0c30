"""``envoykit authz serve|test`` and ``envoykit token``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from envoykit.core.errors import ConfigError
from envoykit.core.output import emit, error_doc, output_option

DEMO_ISSUER = "https://demo-issuer.envoykit.local"
DEMO_KEY = Path("examples/demo-issuer/key.pem")


@click.group()
def authz() -> None:
    """The ext_authz server: identity policy written in Python."""


@authz.command()
@click.option(
    "--policy-dir", type=click.Path(path_type=Path), required=True, help="rules (*.py, *.yaml, authn.yaml)"
)
@click.option("--address", default="127.0.0.1:9191", show_default=True, help="gRPC listen address")
@click.option("--metrics-port", type=int, default=None, help="Prometheus /metrics port (0: any free port)")
@click.option("--rule-budget-ms", type=float, default=50.0, show_default=True, help="time one rule may take")
@click.option("--failure-status", type=int, default=403, show_default=True, help="status when a rule fails")
@click.option("--dry-run", is_flag=True, help="decide and log, never deny")
@click.option("--decision-log", default=None, help="append one JSON line per decision here ('-' = stdout)")
@click.option(
    "--decision-log-sample-allow",
    type=float,
    default=1.0,
    show_default=True,
    help="fraction of allows logged",
)
@click.option(
    "--threads",
    type=int,
    default=2,
    show_default=True,
    help="handler threads per worker (lean: for rules marked blocking=True; grpcio: for every call)",
)
@click.option("--workers", type=int, default=1, show_default=True, help="server processes on the same port")
@click.option(
    "--allow-empty-policy",
    is_flag=True,
    help="accept a reload that removes every rule, a whole file's rules or authn.yaml (refused by default)",
)
@click.option(
    "--settle-ms",
    type=float,
    default=250.0,
    show_default=True,
    help="a changed policy loads once its files stayed unchanged this long",
)
@click.option(
    "--server",
    "server_kind",
    type=click.Choice(["lean", "grpcio"]),
    default="lean",
    show_default=True,
    help="lean: one event loop, policy inline; grpcio: thread-pool grpcio server (reflection)",
)
@click.option(
    "--gate-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the native gate of the policy served here (JSON), atomically, on start and after every "
    "accepted reload; the control plane reads it (also served at /gate on --metrics-port)",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    policy_dir: Path,
    address: str,
    metrics_port: int | None,
    rule_budget_ms: float,
    failure_status: int,
    dry_run: bool,
    decision_log: str | None,
    decision_log_sample_allow: float,
    threads: int,
    workers: int,
    allow_empty_policy: bool,
    settle_ms: float,
    server_kind: str,
    gate_file: Path | None,
    log_level: str,
) -> None:
    """Serve envoy.service.auth.v3.Authorization/Check until SIGTERM."""
    from envoykit.authz.engine import EngineSettings
    from envoykit.authz.server import ServerOptions, run
    from envoykit.core.logs import configure_logging

    configure_logging(log_level)
    opts = ServerOptions(
        policy_dir=policy_dir,
        address=address,
        metrics_port=metrics_port,
        settings=EngineSettings(
            rule_budget_ms=rule_budget_ms, failure_status=failure_status, dry_run=dry_run
        ),
        decision_log=decision_log,
        decision_log_sample_allow=decision_log_sample_allow,
        threads=threads,
        workers=workers,
        allow_empty_policy=allow_empty_policy,
        settle_ms=settle_ms,
        server=server_kind,
        gate_file=gate_file,
    )
    try:
        run(opts)
    except ConfigError as exc:
        raise click.ClickException(f"policy refused: {exc}") from exc
    except RuntimeError as exc:  # workers failing at start
        raise click.ClickException(str(exc)) from exc


@authz.command("test")
@click.argument("policy_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("cases", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--run", "run_pattern", default=None, help="Only cases whose name matches this regex.")
@output_option(("text", "json", "yaml", "junit"))
def test_cmd(policy_dir: Path, cases: Path, run_pattern: str | None, output: str) -> None:
    """Run request fixtures in CASES against the policy in POLICY_DIR; exit 1 on any failure.

    ``-o junit`` prints JUnit XML for CI; ``-o json|yaml`` one document (see ``results_doc``).
    """
    from envoykit.authz.casetest import junit_xml, results_doc, run_cases
    from envoykit.core.logs import configure_logging

    configure_logging("warning")
    console = Console(highlight=False, soft_wrap=True)
    try:
        results = run_cases(policy_dir, cases, run_pattern)
    except ConfigError as exc:
        if output in ("json", "yaml"):
            emit({"ok": False, "error": error_doc(exc)}, output)
            sys.exit(1)
        raise click.ClickException(str(exc)) from exc
    failed = [r for r in results if r.problems]
    if output == "junit":
        click.echo(junit_xml(results, cases.stem), nl=False)
        sys.exit(1 if failed else 0)
    if output != "text":
        emit(results_doc(results), output)
        sys.exit(1 if failed else 0)
    for r in results:
        mark = "[red]FAIL[/]" if r.problems else "[green]PASS[/]"
        # names, rules and problems are the user's text: escape them, "[admin]" is not markup
        console.print(f"{mark} {escape(r.name)}  [dim](rule: {escape(r.rule)})[/]")
        for p in r.problems:
            console.print(f"     {escape(p)}")
    console.print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


@authz.command("compile")
@click.argument("policy_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--namespace", default=None, help="the workload's namespace (policies of others are left out)")
@click.option("--label", "labels", multiple=True, help="a workload label KEY=VALUE (selectors); repeatable")
@click.option(
    "--gate",
    is_flag=True,
    help="the native gate: RBAC filters for before ext_authz, and ext_authz's filter_enabled_metadata "
    "(Python rules allowed: their requests go to ext_authz)",
)
@click.option(
    "--document",
    is_flag=True,
    help="with --gate: print the gate document (JSON) the server publishes with --gate-file, for "
    "`envoykit envoy inject --gate FILE`",
)
def compile_cmd(
    policy_dir: Path, namespace: str | None, labels: tuple[str, ...], gate: bool, document: bool
) -> None:
    """Print Envoy RBAC http_filters (YAML) enforcing POLICY_DIR's AuthorizationPolicies natively.

    Without --namespace/--label every policy is compiled, whatever its namespace or selector.
    With --gate, the policy may also hold Python rules (see docs/authz.md, "The native gate");
    --gate --document prints the gate as data instead (the server's --gate-file document).
    """
    import yaml
    from google.protobuf.json_format import MessageToDict

    from envoykit.authz.istio import Workload
    from envoykit.authz.loader import load_policy
    from envoykit.authz.rbac import compile_policy_dir
    from envoykit.core.logs import configure_logging

    configure_logging("warning")
    label_map: dict[str, str] = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        label_map[key] = value
    workload = Workload(namespace, label_map) if namespace or label_map else None

    def d(msg: Any) -> Any:
        return json.loads(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))

    try:
        if gate and document:
            from envoykit.authz.gate import gate_document

            click.echo(gate_document(load_policy(policy_dir)).model_dump_json(indent=1))
            return
        if document:
            raise click.UsageError("--document goes with --gate")
        if gate:
            from envoykit.authz.gate import compile_gate

            g = compile_gate(load_policy(policy_dir), [workload or Workload()])
            doc = {
                "http_filters": [d(f) for f in g.filters],
                "ext_authz": {"filter_enabled_metadata": d(g.ext_authz_enabled)},
            }
            click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
            sent = ", ".join([*g.python_rules, *(f"header {h}" for h in g.credentials)]) or "nothing"
            click.echo(f"# to ext_authz: requests matching {sent}", err=True)
            return
        filters = compile_policy_dir(load_policy(policy_dir), workload)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(yaml.safe_dump({"http_filters": [d(f) for f in filters]}, sort_keys=False), nl=False)


@click.command()
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=DEMO_KEY, show_default=True)
@click.option("--kid", default="demo", show_default=True)
@click.option("--issuer", default=DEMO_ISSUER, show_default=True)
@click.option("--subject", "--sub", default="demo-user", show_default=True)
@click.option("--audience", "--aud", multiple=True, default=["envoykit-mesh"], show_default=True)
@click.option("--ttl", "ttl_s", type=int, default=3600, show_default=True, help="seconds until exp")
@click.option("--claim", multiple=True, help="extra claim NAME=VALUE (VALUE parsed as JSON when it can be)")
def token(
    key_path: Path,
    kid: str,
    issuer: str,
    subject: str,
    audience: tuple[str, ...],
    ttl_s: int,
    claim: tuple[str, ...],
) -> None:
    """Mint a signed JWT for tests and the demo mesh (the demo issuer's key by default)."""
    from envoykit.authz.tokens import load_key, mint

    if not key_path.exists():
        raise click.ClickException(f"{key_path}: no such key (run from the repo root, or pass --key)")
    extra = {}
    for c in claim:
        name, _, raw = c.partition("=")
        try:
            extra[name] = json.loads(raw)
        except json.JSONDecodeError:
            extra[name] = raw
    aud: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
    click.echo(
        mint(
            load_key(key_path),
            issuer=issuer,
            subject=subject,
            audience=aud,
            ttl_s=ttl_s,
            kid=kid,
            claims=extra,
        )
    )
