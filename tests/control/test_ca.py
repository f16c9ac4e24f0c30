"""Unit tests of the mesh CA: certificate fields, chain, lifetimes, renewal timing, rotation, key files."""

from __future__ import annotations

import random
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from envoykit.control.pki.ca import BACKDATE, CAError, CertificateAuthority, ManualClock
from envoykit.core.spiffe import InvalidSpiffeId

TD = "mesh.local"
SID = f"spiffe://{TD}/ns/default/sa/orders"


def _verify(bundle_pem: bytes, chain_pem: bytes, at) -> list[x509.GeneralName]:
    """Verify a leaf (+ intermediates) against a PEM bundle, as a TLS client certificate at time ``at``."""
    roots = x509.load_pem_x509_certificates(bundle_pem)
    chain = x509.load_pem_x509_certificates(chain_pem)
    verifier = PolicyBuilder().store(Store(roots)).time(at).build_client_verifier()
    return list(verifier.verify(chain[0], chain[1:]).subjects or [])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ca(tmp_path: Path, clock: ManualClock) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, TD, clock=clock, rng=random.Random(7))


def test_workload_certificate_fields(ca: CertificateAuthority, clock: ManualClock) -> None:
    issued = ca.issue(SID)
    cert = issued.certificate
    # X.509-SVID 2: exactly one URI SAN, the SPIFFE ID; critical because the subject is empty
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SID]
    assert len(list(san.value)) == 1
    assert cert.subject == x509.Name([])
    # 4.1 / 4.3 / 4.4
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # ECDSA P-256 by default, signed with SHA-256
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    # 24 h from now, backdated a little for clock skew
    assert cert.not_valid_after_utc == clock.now.replace(microsecond=0) + timedelta(hours=24)
    assert cert.not_valid_before_utc == (clock.now - BACKDATE).replace(microsecond=0)
    assert issued.serial == cert.serial_number
    assert cert.issuer == ca.root_certificate().subject
    # the private key matches the certificate
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    priv = load_pem_private_key(issued.key_pem, None)
    assert priv.public_key() == cert.public_key()
    assert "BEGIN" not in repr(issued)  # keys and PEM are kept out of repr (and so out of logs)


def test_chain_verifies_against_the_trust_bundle(ca: CertificateAuthority, clock: ManualClock) -> None:
    issued = ca.issue(SID)
    subjects = _verify(ca.trust_bundle_pem(), issued.chain_pem, clock.now)
    assert x509.UniformResourceIdentifier(SID) in subjects
    # expired after 24 h
    with pytest.raises(VerificationError):
        _verify(ca.trust_bundle_pem(), issued.chain_pem, clock.now + timedelta(hours=24, seconds=1))


def test_root_is_a_ca_of_the_trust_domain(ca: CertificateAuthority) -> None:
    root = ca.root_certificate()
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    uris = root.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == TD
    assert root.not_valid_after_utc - root.not_valid_before_utc > timedelta(days=3600)


def test_custom_ttl_and_key_type(tmp_path: Path, clock: ManualClock) -> None:
    ca = CertificateAuthority(tmp_path, TD, clock=clock, key_type="rsa-2048")
    issued = ca.issue(SID, ttl=timedelta(hours=1))
    cert = issued.certificate
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.not_valid_after_utc == clock.now.replace(microsecond=0) + timedelta(hours=1)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_renewal_at_half_life_with_jitter(tmp_path: Path, clock: ManualClock) -> None:
    ca = CertificateAuthority(tmp_path, TD, clock=clock, renew_jitter=0.05, rng=random.Random(1))
    offsets = []
    for _ in range(40):
        c = ca.issue(SID)
        offsets.append((c.renew_at - clock.now) / timedelta(hours=1))
    assert all(12 * 0.9 <= o <= 12 * 1.1 for o in offsets)  # 24 h * (0.5 ± 0.05)
    assert len({round(o, 6) for o in offsets}) > 30  # jittered, not one fixed point
    no_jitter = CertificateAuthority(tmp_path / "b", TD, clock=clock, renew_jitter=0)
    assert no_jitter.issue(SID, ttl=timedelta(hours=2)).renew_at == clock.now + timedelta(hours=1)


def test_leaf_never_outlives_its_signer(tmp_path: Path, clock: ManualClock) -> None:
    ca = CertificateAuthority(tmp_path, TD, clock=clock, root_ttl=timedelta(hours=3))
    c = ca.issue(SID, ttl=timedelta(hours=24))
    assert c.not_after == ca.root_certificate().not_valid_after_utc


def test_bad_requests_get_clear_errors(ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="not in trust domain"):
        ca.issue("spiffe://other.domain/ns/default/sa/orders")
    with pytest.raises(CAError, match="names the trust domain"):
        ca.issue(f"spiffe://{TD}")
    with pytest.raises(InvalidSpiffeId):
        ca.issue("https://mesh.local/ns/a/sa/b")
    with pytest.raises(CAError, match="ttl must be positive"):
        ca.issue(SID, ttl=timedelta(0))
    with pytest.raises(CAError, match="unknown key type"):
        CertificateAuthority(ca.dir.parent / "x", TD, key_type="dsa")  # type: ignore[arg-type]


def test_key_files_are_private_and_state_reopens(tmp_path: Path, clock: ManualClock) -> None:
    ca = CertificateAuthority(tmp_path, TD, clock=clock)
    key_files = list((tmp_path / "ca").rglob("*key*"))
    assert key_files
    for f in key_files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    again = CertificateAuthority(tmp_path, TD, clock=clock)
    assert again.root_certificate() == ca.root_certificate()
    assert "PRIVATE" not in repr(again)
    # a certificate issued by the reopened CA verifies against the first one's bundle
    _verify(ca.trust_bundle_pem(), again.issue(SID).chain_pem, clock.now)
    with pytest.raises(CAError, match=r"trust domain 'mesh\.local'"):
        CertificateAuthority(tmp_path, "other.local")
    key_files[0].chmod(0o644)
    with pytest.raises(CAError, match="chmod 600"):
        CertificateAuthority(tmp_path, TD)


def _user_root(clock: ManualClock) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(clock.now - timedelta(days=1))
        .not_valid_after(clock.now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA384())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def test_intermediate_under_a_user_root(tmp_path: Path, clock: ManualClock) -> None:
    root_pem, root_key = _user_root(clock)
    ca = CertificateAuthority(tmp_path, TD, clock=clock, root_cert_pem=root_pem, root_key_pem=root_key)
    assert ca.trust_bundle_pem() == root_pem  # the user's root is the trust anchor
    issued = ca.issue(SID)
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    assert len(chain) == 2  # leaf + intermediate
    inter = chain[1]
    assert inter.issuer == x509.load_pem_x509_certificate(root_pem).subject
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # the intermediate is clipped to the user root's validity
    assert inter.not_valid_after_utc <= x509.load_pem_x509_certificate(root_pem).not_valid_after_utc
    _verify(root_pem, issued.chain_pem, clock.now)
    # the user root's key is never written to the state dir
    stored = b"".join(p.read_bytes() for p in (tmp_path / "ca").rglob("*.pem"))
    assert root_key not in stored
    # a second open with the same root is fine; another root is refused
    CertificateAuthority(tmp_path, TD, clock=clock, root_cert_pem=root_pem)
    other_pem, _ = _user_root(clock)
    with pytest.raises(CAError, match="another root"):
        CertificateAuthority(tmp_path, TD, clock=clock, root_cert_pem=other_pem)


def test_unusable_user_roots_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    root_pem, root_key = _user_root(clock)
    _, other_key = _user_root(clock)
    with pytest.raises(CAError, match="does not belong"):
        CertificateAuthority(tmp_path / "a", TD, clock=clock, root_cert_pem=root_pem, root_key_pem=other_key)
    with pytest.raises(CAError, match="both"):
        CertificateAuthority(tmp_path / "b", TD, clock=clock, root_cert_pem=root_pem)
    with pytest.raises(CAError, match="not a PEM"):
        CertificateAuthority(tmp_path / "c", TD, clock=clock, root_cert_pem=b"junk", root_key_pem=root_key)
    leaf_ca = CertificateAuthority(tmp_path / "d", TD, clock=clock)
    leaf = leaf_ca.issue(SID)
    with pytest.raises(CAError, match="cA=false"):
        CertificateAuthority(
            tmp_path / "e", TD, clock=clock, root_cert_pem=leaf.cert_pem, root_key_pem=leaf.key_pem
        )
    with pytest.raises(CAError, match="not valid now"):
        CertificateAuthority(
            tmp_path / "f",
            TD,
            clock=ManualClock(clock.now + timedelta(days=60)),
            root_cert_pem=root_pem,
            root_key_pem=root_key,
        )


def test_root_rotation_keeps_both_roots_during_the_overlap(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    old_root = ca.root_certificate()
    old_cert = ca.issue(SID)
    new_root = ca.rotate_root(overlap=timedelta(hours=24), activate_after=timedelta(seconds=30))
    assert new_root != old_root and ca.generation == 2
    # phase 1: both roots trusted, the old authority still signs
    assert ca.trusted_roots() == [new_root, old_root]
    assert ca.issue(SID).generation == 1
    # phase 2: the new authority signs; certificates of both generations verify against the bundle
    clock.advance(31)
    fresh = ca.issue(SID)
    assert fresh.generation == 2 and fresh.certificate.issuer == new_root.subject
    bundle = ca.trust_bundle_pem()
    _verify(bundle, old_cert.chain_pem, clock.now)
    _verify(bundle, fresh.chain_pem, clock.now)
    # after the overlap the old root leaves the bundle and the old certificate is refused
    clock.advance(hours=24)
    assert ca.trusted_roots() == [new_root]
    before_expiry = clock.now - timedelta(hours=1)  # the old certificate itself is still valid then
    _verify(bundle, old_cert.chain_pem, before_expiry)
    with pytest.raises(VerificationError):
        _verify(ca.trust_bundle_pem(), old_cert.chain_pem, before_expiry)
    _verify(ca.trust_bundle_pem(), ca.issue(SID).chain_pem, clock.now)


def test_rotation_is_seen_by_another_process(tmp_path: Path, clock: ManualClock) -> None:
    serving = CertificateAuthority(tmp_path, TD, clock=clock)
    cli = CertificateAuthority(tmp_path, TD, clock=clock)
    cli.rotate_root(activate_after=timedelta(0))
    assert serving.reload_if_changed()
    assert serving.generation == 2 and len(serving.trusted_roots()) == 2
    assert not serving.reload_if_changed()
    assert serving.next_change_at() == clock.now + timedelta(hours=24)


def test_rotation_arguments_are_checked(ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="shorter than overlap"):
        ca.rotate_root(overlap=timedelta(seconds=10), activate_after=timedelta(seconds=10))
    with pytest.raises(CAError, match="both"):
        ca.rotate_root(root_cert_pem=b"x")
