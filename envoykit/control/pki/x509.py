"""X.509 building blocks of the mesh CA (cryptography): keys, PEM, signing and workload certificates.

Pure functions, no state; :mod:`envoykit.control.pki.ca` decides who is signed, when and for how long.
Certificate contents follow the X.509-SVID specification (github.com/spiffe/spiffe,
standards/X509-SVID.md); the section of each rule is named where it is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: not_before is set this far in the past so peers with a slightly slow clock accept a fresh certificate.
BACKDATE = timedelta(minutes=1)


class CAError(RuntimeError):
    """The CA cannot do what was asked: bad root given, state directory of another trust domain, etc."""


def new_key(key_type: KeyType) -> PrivateKey:
    """A new private key: ``ec-p256`` (ECDSA P-256), ``ec-p384`` or ``rsa-2048``.

    Raises:
        CAError: unknown ``key_type``.
    """
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CAError(f"unknown key type {key_type!r}: use ec-p256, ec-p384 or rsa-2048")


def key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(pem: bytes, where: str) -> PrivateKey:
    """Parse an unencrypted PEM private key (EC or RSA); ``where`` names it in errors.

    Raises:
        CAError: not a PEM key, encrypted, or of a type that cannot sign certificates here.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CAError(f"{where}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"{where}: only EC and RSA keys can sign")
    return key


def load_cert(pem: bytes, where: str) -> x509.Certificate:
    """Parse one PEM certificate; ``where`` names it in errors.

    Raises:
        CAError: not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CAError(f"{where}: not a PEM certificate ({exc})") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate's DER, hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def ca_name(trust_domain: str, what: str, generation: int) -> x509.Name:
    """Subject of a CA certificate: ``O=<trust domain>, CN=envoykit <what> <generation>``."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"envoykit {what} {generation}"),
        ]
    )


def _usage(*, sign_certs: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def ca_certificate(
    *,
    trust_domain: str,
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    now: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A signing certificate (X.509-SVID 4.1, 4.3: ``cA=true``, ``keyCertSign``, ``cRLSign``) carrying the
    trust domain's SPIFFE ID; self-signed when ``issuer`` is None, else an intermediate under ``issuer``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(sign_certs=True), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def workload_certificate(
    *,
    spiffe_uri: str,
    key: PrivateKey,
    signer: x509.Certificate,
    signer_key: PrivateKey,
    now: datetime,
    not_after: datetime,
    dns_names: Sequence[str] = (),
) -> x509.Certificate:
    """An X.509-SVID leaf: empty subject and one critical URI SAN (section 2), ``cA=false`` (4.1),
    ``digitalSignature`` (4.3; plus ``keyEncipherment`` for RSA keys), ``serverAuth`` + ``clientAuth`` (4.4).
    ``dns_names`` join the SAN (section 2 allows other SAN types beside the one URI): a server that HTTPS
    clients reach by name, such as the admission webhook behind its Kubernetes Service."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_uri), *(x509.DNSName(n) for n in dns_names)]
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _usage(sign_certs=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
        .sign(signer_key, hashes.SHA256())
    )


def check_user_root(root: x509.Certificate, key: PrivateKey, now: datetime) -> None:
    """Check that a root given by the user can sign our intermediate.

    Raises:
        CAError: no ``basicConstraints`` or ``cA=false``, the key is not the certificate's, or the root is
            not valid at ``now``.
    """
    try:
        bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CAError("root certificate has no basicConstraints: it is not a CA") from None
    if not bc.ca:
        raise CAError("root certificate has cA=false: it cannot sign")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != root.public_key().public_bytes(*spki):
        raise CAError("root key does not belong to the root certificate")
    if not root.not_valid_before_utc <= now < root.not_valid_after_utc:
        raise CAError(
            f"root certificate is not valid now (valid {root.not_valid_before_utc} to {root.not_valid_after_utc})"
        )
