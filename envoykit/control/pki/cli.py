"""``envoykit ca``: create the mesh CA, show its root, issue a certificate to files, rotate the root.

Commands (all take ``--state-dir``, the control plane's state directory; by default the one of the mesh
``envoykit up`` runs from here, else ``.envoykit``: see :mod:`envoykit.control.statedir`)::

    envoykit ca init --trust-domain cluster.local [--root-cert root.pem --root-key root-key.pem]
    envoykit ca show [--pem | -o json|yaml]
    envoykit ca issue spiffe://cluster.local/ns/default/sa/orders --out-dir certs/ [--ttl-hours 24]
    envoykit ca issue --namespace default --service-account orders --out-dir certs/
    envoykit ca rotate [--overlap-hours 24] [--activate-after-seconds 30] [--root-cert .. --root-key ..]

``issue`` writes ``cert-chain.pem`` (leaf + intermediates), ``key.pem`` (mode 0600) and ``root-cert.pem``
(the trust bundle): the file names Istio uses for workload certificates. A running control plane notices
``rotate`` through the state directory within a few seconds and pushes the new secrets.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from envoykit.control.pki.ca import CAError, CertificateAuthority, fingerprint
from envoykit.control.pki.keyfiles import write_private
from envoykit.control.statedir import find_control_state
from envoykit.core.output import emit, output_option
from envoykit.core.spiffe import InvalidSpiffeId, spiffe_id

_state_dir = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The control plane's state directory (the CA lives in <state-dir>/ca). "
    "Default: the running mesh's (as `envoykit status` finds it), else .envoykit.",
)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _open(state_dir: Path | None) -> CertificateAuthority:
    found = find_control_state(state_dir)
    if not (found.path / "ca").exists() and found.how not in ("the default", "--state-dir"):
        # a mesh was found: never suggest `ca init`, which would make a second CA beside it
        raise click.ClickException(
            f"no CA in {found.path} ({found.how}): that mesh runs without mTLS, or its control plane "
            "has not started yet; see `envoykit status`"
        )
    try:
        return CertificateAuthority.load(found.path)
    except (CAError, InvalidSpiffeId, PermissionError) as exc:
        hint = " (no running mesh found from here; give --state-dir to use its CA)"
        raise click.ClickException(str(exc) + (hint if found.how == "the default" else "")) from None


def _cert_info(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": fingerprint(cert),
    }


def _describe(cert: x509.Certificate) -> str:
    return (
        f"  subject:     {cert.subject.rfc4514_string()}\n"
        f"  serial:      {cert.serial_number:x}\n"
        f"  not before:  {cert.not_valid_before_utc.isoformat()}\n"
        f"  not after:   {cert.not_valid_after_utc.isoformat()}\n"
        f"  sha256:      {fingerprint(cert)}"
    )


@click.group()
def ca() -> None:
    """The mesh CA: SPIFFE workload certificates and the trust bundle."""


@ca.command()
@_state_dir
@click.option("--trust-domain", required=True, help="SPIFFE trust domain, e.g. cluster.local.")
@click.option("--root-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
@click.option("--root-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
def init(state_dir: Path | None, trust_domain: str, root_cert: Path | None, root_key: Path | None) -> None:
    """Create the CA: a self-signed root, or an intermediate under --root-cert/--root-key (key not kept)."""
    try:
        authority = CertificateAuthority(
            find_control_state(state_dir).path,
            trust_domain,
            root_cert_pem=_read(root_cert),
            root_key_pem=_read(root_key),
        )
    except (CAError, InvalidSpiffeId, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"CA of trust domain {trust_domain} in {authority.dir}")
    click.echo(_describe(authority.root_certificate()))


@ca.command()
@_state_dir
@click.option("--pem", is_flag=True, help="Print the trust bundle as PEM instead of a summary.")
@output_option()
def show(state_dir: Path | None, pem: bool, output: str) -> None:
    """Show the root certificate and the roots in the trust bundle."""
    authority = _open(state_dir)
    if pem:
        click.echo(authority.trust_bundle_pem().decode(), nl=False)
        return
    if output != "text":
        doc = {
            "state_dir": str(authority.dir.parent.absolute()),
            "trust_domain": authority.trust_domain,
            "generation": authority.generation,
            "signing_generation": authority.signing_generation(),
            "root": _cert_info(authority.root_certificate()),
            "trust_bundle": [_cert_info(r) for r in authority.trusted_roots()],
        }
        emit(doc, output)
        return
    click.echo(f"trust domain: {authority.trust_domain}")
    click.echo(f"generation:   {authority.generation} (signing: {authority.signing_generation()})")
    click.echo("root:")
    click.echo(_describe(authority.root_certificate()))
    roots = authority.trusted_roots()
    click.echo(f"trust bundle: {len(roots)} root(s)")
    for root in roots:
        click.echo(_describe(root))


@ca.command()
@_state_dir
@click.argument("identity", required=False)
@click.option(
    "--namespace", "-n", default=None, help="Namespace (with --service-account, instead of IDENTITY)."
)
@click.option("--service-account", "-s", default=None, help="Service account (with --namespace).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--ttl-hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True)
def issue(
    state_dir: Path | None,
    identity: str | None,
    namespace: str | None,
    service_account: str | None,
    out_dir: Path,
    ttl_hours: float,
) -> None:
    """Issue a workload certificate for IDENTITY (a SPIFFE ID) into --out-dir."""
    authority = _open(state_dir)
    try:
        if identity is None:
            if not (namespace and service_account):
                raise click.UsageError("give a SPIFFE ID, or both --namespace and --service-account")
            identity = spiffe_id(authority.trust_domain, namespace, service_account)
        elif namespace or service_account:
            raise click.UsageError("give a SPIFFE ID or --namespace/--service-account, not both")
        cert = authority.issue(identity, timedelta(hours=ttl_hours))
    except (CAError, InvalidSpiffeId) as exc:
        raise click.ClickException(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cert-chain.pem").write_bytes(cert.chain_pem)
    write_private(out_dir / "key.pem", cert.key_pem)
    (out_dir / "root-cert.pem").write_bytes(authority.trust_bundle_pem())
    click.echo(f"issued {cert.spiffe_id} (serial {cert.serial:x}, valid until {cert.not_after.isoformat()})")
    click.echo(f"  {out_dir / 'cert-chain.pem'}\n  {out_dir / 'key.pem'}\n  {out_dir / 'root-cert.pem'}")


@ca.command()
@_state_dir
@click.option("--overlap-hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True)
@click.option("--activate-after-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--root-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
@click.option("--root-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
def rotate(
    state_dir: Path | None,
    overlap_hours: float,
    activate_after_seconds: float,
    root_cert: Path | None,
    root_key: Path | None,
) -> None:
    """Rotate the root: the new root is trusted now, signs after --activate-after-seconds, and the old
    root stays in the trust bundle for --overlap-hours."""
    authority = _open(state_dir)
    try:
        new_root = authority.rotate_root(
            overlap=timedelta(hours=overlap_hours),
            activate_after=timedelta(seconds=activate_after_seconds),
            root_cert_pem=_read(root_cert),
            root_key_pem=_read(root_key),
        )
    except CAError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rotated to generation {authority.generation}; new root:")
    click.echo(_describe(new_root))
    click.echo(f"trust bundle now holds {len(authority.trusted_roots())} root(s)")
