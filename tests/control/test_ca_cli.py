"""`envoykit ca` through the real command group: init, show, issue, rotate."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from envoykit.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["ca", *args])
    return result.exit_code, result.output


def test_ca_commands(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, out = run("show", "--state-dir", state)
    assert code == 1 and "no CA" in out and "envoykit ca init" in out

    code, out = run("init", "--state-dir", state, "--trust-domain", "mesh.local")
    assert code == 0, out
    assert "O=mesh.local" in out
    code, out = run("show", "--state-dir", state)
    assert code == 0 and "trust domain: mesh.local" in out and "1 root(s)" in out
    code, bundle = run("show", "--state-dir", state, "--pem")
    assert code == 0 and bundle.count("BEGIN CERTIFICATE") == 1

    out_dir = tmp_path / "certs"
    code, out = run("issue", "--state-dir", state, "-n", "default", "-s", "orders", "--out-dir", str(out_dir))
    assert code == 0, out
    assert "spiffe://mesh.local/ns/default/sa/orders" in out
    assert stat.S_IMODE((out_dir / "key.pem").stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((out_dir / "cert-chain.pem").read_bytes())
    roots = x509.load_pem_x509_certificates((out_dir / "root-cert.pem").read_bytes())
    verified = PolicyBuilder().store(Store(roots)).build_client_verifier().verify(chain[0], chain[1:])
    assert x509.UniformResourceIdentifier("spiffe://mesh.local/ns/default/sa/orders") in (
        verified.subjects or []
    )
    lifetime = chain[0].not_valid_after_utc - chain[0].not_valid_before_utc
    assert 24 * 3600 <= lifetime.total_seconds() <= 24 * 3600 + 120

    code, out = run("issue", "--state-dir", state, "spiffe://other.td/ns/a/sa/b", "--out-dir", str(out_dir))
    assert code == 1 and "not in trust domain" in out
    code, out = run("issue", "--state-dir", state, "--out-dir", str(out_dir))
    assert code == 2 and "--namespace" in out

    code, out = run("rotate", "--state-dir", state, "--overlap-hours", "2", "--activate-after-seconds", "0")
    assert code == 0, out
    assert "generation 2" in out and "2 root(s)" in out
    code, bundle = run("show", "--state-dir", state, "--pem")
    assert bundle.count("BEGIN CERTIFICATE") == 2
    code, out = run(
        "rotate", "--state-dir", state, "--overlap-hours", "0.001", "--activate-after-seconds", "60"
    )
    assert code == 1 and "shorter than overlap" in out
