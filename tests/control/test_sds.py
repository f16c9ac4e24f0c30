"""Unit tests of the SDS secret provider: secret shapes, caching, versions, renewal and rotation pushes."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from envoykit.control.pki.ca import CertificateAuthority, ManualClock
from envoykit.control.pki.sds import DEFAULT_SECRET, ROOTCA_SECRET, SECRET_TYPE_URL, SecretProvider

TD = "mesh.local"
A = f"spiffe://{TD}/ns/default/sa/a"
B = f"spiffe://{TD}/ns/default/sa/b"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ca(tmp_path: Path, clock: ManualClock) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, TD, clock=clock, rng=random.Random(3))


def _leaf(secrets) -> x509.Certificate:
    return x509.load_pem_x509_certificates(secrets[0].tls_certificate.certificate_chain.inline_bytes)[0]


def test_default_and_rootca_secrets(ca: CertificateAuthority) -> None:
    provider = SecretProvider(ca)
    secrets = provider.secrets_for_node("node-a", A)
    assert [s.name for s in secrets] == [DEFAULT_SECRET, ROOTCA_SECRET] == ["default", "ROOTCA"]
    default, rootca = secrets
    assert default.tls_certificate.private_key.inline_bytes.startswith(b"-----BEGIN PRIVATE KEY-----")
    san = _leaf(secrets).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [A]
    assert rootca.validation_context.trusted_ca.inline_bytes == ca.trust_bundle_pem()
    assert SECRET_TYPE_URL.endswith(default.DESCRIPTOR.full_name)


def test_cached_per_identity_and_versioned(ca: CertificateAuthority) -> None:
    provider = SecretProvider(ca)
    assert provider.version("node-a") == ""
    a1 = provider.secrets_for_node("node-a", A)
    a2 = provider.secrets_for_node("node-a2", A)  # a second replica of the same service account
    b = provider.secrets_for_node("node-b", B)
    assert a1 == a2 and a1[0] != b[0]
    assert provider.version("node-a") == provider.version("node-a2") != provider.version("node-b")
    assert provider.secrets_for_node("node-a", A) == a1  # cached: no new certificate
    assert provider.refresh() == set()  # nothing due
    provider.forget("node-a")
    provider.forget("node-a2")
    assert _leaf(provider.secrets_for_node("node-a", A)) != _leaf(a1)  # unused certs were dropped


def test_renewal_at_half_life_pushes_only_that_identity(ca: CertificateAuthority, clock: ManualClock) -> None:
    pushed: list[str] = []
    provider = SecretProvider(ca, on_change=pushed.append)
    a = provider.secrets_for_node("node-a", A)
    clock.advance(hours=6)
    provider.secrets_for_node("node-b", B)  # issued 6 h later, renews 6 h later
    va, vb = provider.version("node-a"), provider.version("node-b")
    due = provider.next_refresh_at()
    assert due is not None and timedelta(hours=5) < due - clock.now < timedelta(hours=7)
    clock.now = due
    assert provider.refresh() == {"node-a"} and pushed == ["node-a"]
    assert provider.version("node-a") != va and provider.version("node-b") == vb
    assert _leaf(provider.secrets_for_node("node-a", A)).serial_number != _leaf(a).serial_number
    clock.advance(hours=7)
    assert provider.refresh() == {"node-b"}


def test_root_rotation_pushes_bundle_then_new_certificates(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    pushed: list[str] = []
    provider = SecretProvider(ca, on_change=pushed.append)
    old = provider.secrets_for_node("node-a", A)
    provider.secrets_for_node("node-b", B)
    ca.rotate_root(overlap=timedelta(hours=24), activate_after=timedelta(seconds=30))
    # phase 1: the bundle (both roots) goes to every node; certificates stay
    assert provider.refresh() == {"node-a", "node-b"}
    s1 = provider.secrets_for_node("node-a", A)
    assert len(x509.load_pem_x509_certificates(s1[1].validation_context.trusted_ca.inline_bytes)) == 2
    assert _leaf(s1) == _leaf(old)
    assert provider.refresh() == set()
    # phase 2: once the new authority signs, every certificate is re-issued under it
    clock.advance(31)
    assert provider.refresh() == {"node-a", "node-b"}
    assert _leaf(provider.secrets_for_node("node-a", A)).issuer == ca.root_certificate().subject
    # phase 3: after the overlap the old root leaves the bundle
    clock.advance(hours=24)
    changed = provider.refresh()
    assert changed == {"node-a", "node-b"}
    bundle = provider.secrets_for_node("node-a", A)[1].validation_context.trusted_ca.inline_bytes
    assert x509.load_pem_x509_certificates(bundle) == [ca.root_certificate()]
    assert pushed.count("node-a") == 3


def test_rotation_from_another_process_is_noticed(tmp_path: Path, clock: ManualClock) -> None:
    serving = CertificateAuthority(tmp_path, TD, clock=clock)
    provider = SecretProvider(serving)
    provider.secrets_for_node("n", A)
    CertificateAuthority(tmp_path, TD, clock=clock).rotate_root()  # e.g. `envoykit ca rotate`
    assert provider.refresh() == {"n"}


async def test_run_refreshes_when_due(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, TD, renew_jitter=0)
    pushed: list[str] = []
    provider = SecretProvider(ca, on_change=pushed.append, ttl=timedelta(seconds=1))
    first = provider.secrets_for_node("n", A)  # a 1 s certificate renews at 0.5 s
    task = asyncio.create_task(provider.run(max_interval=5))
    try:
        for _ in range(100):
            if pushed:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert pushed and pushed[0] == "n"
    assert _leaf(provider.secrets_for_node("n", A)) != _leaf(first)
