"""The mesh CA: issues short-lived SPIFFE workload certificates (X.509-SVIDs) and keeps the trust bundle.

Public API::

    ca = CertificateAuthority(state_dir, "mesh.local")           # opens, or creates a self-signed root
    ca = CertificateAuthority(state_dir, "mesh.local", root_cert_pem=..., root_key_pem=...)  # intermediate
    cert = ca.issue("spiffe://mesh.local/ns/default/sa/orders")   # IssuedCertificate, 24 h by default
    ca.trust_bundle_pem()                                       # every root trusted now (PEM, bytes)
    ca.rotate_root(overlap=timedelta(hours=24))                 # new root; the old one stays trusted

Certificates follow the X.509-SVID specification (github.com/spiffe/spiffe, standards/X509-SVID.md):
exactly one URI SAN holding the SPIFFE ID (section 2), leaf ``basicConstraints cA=false`` and
``keyUsage digitalSignature`` (sections 4.1, 4.3), ``extendedKeyUsage serverAuth, clientAuth`` (4.4);
signing certificates ``cA=true`` with ``keyCertSign`` and ``cRLSign`` and the trust domain's SPIFFE ID.

State on disk, under ``<state_dir>/ca/`` (directory 0700)::

    state.json                 trust domain and the generations of signing authority
    gen-<n>/root-cert.pem      the trust anchor of generation n
    gen-<n>/signer-cert.pem    the certificate that signs workloads (the root itself, or an intermediate)
    gen-<n>/signer-key.pem     its private key, mode 0600; never logged, never served

A user-provided root's key is used once to sign the intermediate and is never written.

Rotation (:meth:`CertificateAuthority.rotate_root`) is two-phase so no handshake fails while the root
changes: the new root joins the trust bundle at once, the new authority starts signing ``activate_after``
later (time for every Envoy to receive the new bundle), and the old root stays in the bundle until
``overlap`` after rotation (time for certificates it signed to be renewed).

X.509 construction lives in :mod:`envoykit.control.pki.x509`; ``CAError``, ``BACKDATE`` and ``fingerprint``
are re-exported here.

Every time is taken from ``clock`` (a callable returning an aware UTC ``datetime``), so tests drive
renewal and rotation with :class:`ManualClock`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from envoykit.control.pki.keyfiles import read_private, write_private
from envoykit.control.pki.x509 import (
    BACKDATE,
    CAError,
    KeyType,
    PrivateKey,
    ca_certificate,
    ca_name,
    cert_pem,
    check_user_root,
    fingerprint,
    key_pem,
    load_cert,
    load_key,
    new_key,
    workload_certificate,
)
from envoykit.core.spiffe import parse_spiffe_id, validate_trust_domain

Clock = Callable[[], datetime]

DEFAULT_WORKLOAD_TTL = timedelta(hours=24)
DEFAULT_ROOT_TTL = timedelta(days=3650)
DEFAULT_INTERMEDIATE_TTL = timedelta(days=365)
DEFAULT_OVERLAP = timedelta(hours=24)
DEFAULT_ACTIVATE_AFTER = timedelta(seconds=30)


def utc_now() -> datetime:
    """The wall clock, as an aware UTC datetime (the default :data:`Clock`)."""
    return datetime.now(UTC)


class ManualClock:
    """A clock for tests: stands still until :meth:`advance` is called.

    Args:
        start: the initial time (aware); the wall clock by default.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Move forward by ``seconds`` (and/or ``hours=``, ``minutes=``...); return the new time."""
        self.now += timedelta(seconds=seconds, **delta)
        return self.now


@dataclass(frozen=True)
class IssuedCertificate:
    """A workload certificate and its key.

    Attributes:
        spiffe_id: the identity in the URI SAN.
        cert_pem: the leaf certificate (PEM).
        chain_pem: the leaf followed by any intermediates: what Envoy's ``TlsCertificate.certificate_chain``
            wants (PEM).
        key_pem: the leaf's private key (PKCS#8 PEM); not shown by ``repr``.
        not_before, not_after: validity (aware UTC).
        renew_at: when to replace it: half its lifetime with jitter.
        serial: the certificate's serial number.
        generation: the CA generation that signed it.
    """

    spiffe_id: str
    cert_pem: bytes = field(repr=False)
    chain_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime
    renew_at: datetime
    serial: int
    generation: int

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf as a ``cryptography`` certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass
class _Generation:
    id: int
    root: x509.Certificate
    signer: x509.Certificate
    signer_key: PrivateKey = field(repr=False)
    signing_from: datetime
    trusted_until: datetime | None  # None: until the root expires

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [] if self.signer == self.root else [self.signer]


class CertificateAuthority:
    """The mesh CA of one trust domain, persisted in ``<state_dir>/ca``.

    Opens the CA found in the state directory, or creates one: a self-signed root, or, when
    ``root_cert_pem`` and ``root_key_pem`` are given, an intermediate signed by that root.

    Args:
        state_dir: the mesh's state directory.
        trust_domain: SPIFFE trust domain, e.g. ``mesh.local``.
        clock: returns the current time (aware UTC); :func:`utc_now` by default.
        key_type: key of new certificates: ``ec-p256`` (default, ECDSA P-256), ``ec-p384`` or ``rsa-2048``.
        root_ttl: validity of a self-signed root (default 10 years).
        intermediate_ttl: validity of an intermediate under a user root (default 1 year, clipped to the root).
        renew_jitter: renewal happens at ``lifetime * (0.5 ± renew_jitter)`` (default 0.05).
        rng: random source of the jitter (seed it in tests).

    Raises:
        CAError: the state directory belongs to another trust domain, or the given root is not a usable CA
            (not ``cA=true``, key does not match, expired).
        InvalidSpiffeId: ``trust_domain`` is not a valid trust domain name.
    """

    def __init__(
        self,
        state_dir: str | Path,
        trust_domain: str,
        *,
        clock: Clock = utc_now,
        key_type: KeyType = "ec-p256",
        root_cert_pem: bytes | None = None,
        root_key_pem: bytes | None = None,
        root_ttl: timedelta = DEFAULT_ROOT_TTL,
        intermediate_ttl: timedelta = DEFAULT_INTERMEDIATE_TTL,
        renew_jitter: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        self.trust_domain = validate_trust_domain(trust_domain)
        self.dir = Path(state_dir) / "ca"
        self.clock = clock
        self.key_type = key_type
        self.root_ttl = root_ttl
        self.intermediate_ttl = intermediate_ttl
        if not 0 <= renew_jitter < 0.5:
            raise CAError("renew_jitter must be in [0, 0.5)")
        self.renew_jitter = renew_jitter
        self._rng = rng or random.Random()
        self._generations: list[_Generation] = []
        self._state_mtime = 0.0
        if (self.dir / "state.json").exists():
            self._load()
            if root_cert_pem is not None:
                given = load_cert(root_cert_pem, "root certificate")
                if all(g.root != given for g in self._generations):
                    raise CAError(f"{self.dir} already holds a CA with another root; use rotate_root")
        else:
            if (root_cert_pem is None) != (root_key_pem is None):
                raise CAError("give both the root certificate and its key, or neither")
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._generations.append(self._make_generation(1, self.clock(), root_cert_pem, root_key_pem))
            self._save()

    @classmethod
    def load(cls, state_dir: str | Path, **kwargs: Any) -> CertificateAuthority:
        """Open the CA already in ``state_dir`` (its trust domain read from ``state.json``).

        Args:
            kwargs: as for the constructor (``clock``, ``key_type``...).

        Raises:
            CAError: there is no CA in ``state_dir``, or it cannot be read.
        """
        path = Path(state_dir) / "ca" / "state.json"
        try:
            trust_domain = json.loads(path.read_text())["trust_domain"]
        except FileNotFoundError:
            raise CAError(f"no CA in {state_dir} (create one with `envoykit ca init`)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CAError(f"{path}: unreadable CA state ({exc})") from None
        return cls(state_dir, str(trust_domain), **kwargs)

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.trust_domain!r}, {str(self.dir)!r}, generation={self.generation})"

    # ---- creation and persistence

    def _make_generation(
        self,
        gen: int,
        now: datetime,
        root_cert_pem: bytes | None,
        root_key_pem: bytes | None,
        signing_from: datetime | None = None,
    ) -> _Generation:
        signing_from = signing_from or now
        key = new_key(self.key_type)
        if root_cert_pem is None or root_key_pem is None:
            root = ca_certificate(
                trust_domain=self.trust_domain,
                subject=ca_name(self.trust_domain, "root", gen),
                key=key,
                issuer=None,
                issuer_key=key,
                now=now,
                not_after=now + self.root_ttl,
            )
            return _Generation(gen, root, root, key, signing_from, None)
        root = load_cert(root_cert_pem, "root certificate")
        root_key = load_key(root_key_pem, "root key")
        check_user_root(root, root_key, now)
        inter = ca_certificate(
            trust_domain=self.trust_domain,
            subject=ca_name(self.trust_domain, "intermediate", gen),
            key=key,
            issuer=root,
            issuer_key=root_key,
            now=now,
            not_after=min(now + self.intermediate_ttl, root.not_valid_after_utc),
        )
        return _Generation(gen, root, inter, key, signing_from, None)

    def _save(self) -> None:
        for g in self._generations:
            gdir = self.dir / f"gen-{g.id}"
            if not (gdir / "signer-key.pem").exists():
                gdir.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_private(gdir / "signer-key.pem", key_pem(g.signer_key))
                (gdir / "root-cert.pem").write_bytes(cert_pem(g.root))
                (gdir / "signer-cert.pem").write_bytes(cert_pem(g.signer))
        state = {
            "trust_domain": self.trust_domain,
            "generations": [
                {
                    "id": g.id,
                    "signing_from": g.signing_from.isoformat(),
                    "trusted_until": g.trusted_until.isoformat() if g.trusted_until else None,
                }
                for g in self._generations
            ],
        }
        write_private(self.dir / "state.json", json.dumps(state, indent=1).encode())
        self._state_mtime = (self.dir / "state.json").stat().st_mtime

    def _load(self) -> None:
        path = self.dir / "state.json"
        try:
            state = json.loads(path.read_text())
            if state["trust_domain"] != self.trust_domain:
                raise CAError(
                    f"{self.dir} holds the CA of trust domain {state['trust_domain']!r}, "
                    f"not {self.trust_domain!r}"
                )
            gens = []
            for g in state["generations"]:
                gdir = self.dir / f"gen-{g['id']}"
                gens.append(
                    _Generation(
                        int(g["id"]),
                        load_cert((gdir / "root-cert.pem").read_bytes(), str(gdir / "root-cert.pem")),
                        load_cert((gdir / "signer-cert.pem").read_bytes(), str(gdir / "signer-cert.pem")),
                        load_key(read_private(gdir / "signer-key.pem"), str(gdir / "signer-key.pem")),
                        datetime.fromisoformat(g["signing_from"]),
                        datetime.fromisoformat(g["trusted_until"]) if g["trusted_until"] else None,
                    )
                )
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise CAError(f"{self.dir}: unreadable CA state ({exc})") from exc
        if not gens:
            raise CAError(f"{path}: no CA generations")
        self._generations = gens
        self._state_mtime = path.stat().st_mtime

    def reload_if_changed(self) -> bool:
        """Re-read the state directory if another process (``envoykit ca rotate``) changed it.

        Returns:
            True when the state was re-read.
        """
        try:
            mtime = (self.dir / "state.json").stat().st_mtime
        except OSError:
            return False
        if mtime == self._state_mtime:
            return False
        self._load()
        return True

    # ---- the authority now

    @property
    def generation(self) -> int:
        """Id of the newest generation (bumped by every rotation)."""
        return self._generations[-1].id

    def _signing(self, now: datetime) -> _Generation:
        active = [g for g in self._generations if g.signing_from <= now]
        return active[-1] if active else self._generations[0]

    def signing_generation(self) -> int:
        """Id of the generation that signs workload certificates now."""
        return self._signing(self.clock()).id

    def root_certificate(self) -> x509.Certificate:
        """The newest root (the one ``envoykit ca show`` prints)."""
        return self._generations[-1].root

    def trusted_roots(self) -> list[x509.Certificate]:
        """Roots trusted now: every generation's root still valid and inside its overlap, newest first."""
        now = self.clock()
        out: list[x509.Certificate] = []
        for g in reversed(self._generations):
            if g.trusted_until is not None and now >= g.trusted_until:
                continue
            if not g.root.not_valid_before_utc <= now < g.root.not_valid_after_utc:
                continue
            if g.root not in out:
                out.append(g.root)
        return out

    def trust_bundle_pem(self) -> bytes:
        """The trust bundle: PEM of :meth:`trusted_roots` concatenated (Envoy's ``trusted_ca``)."""
        return b"".join(cert_pem(c) for c in self.trusted_roots())

    def trust_bundle_version(self) -> str:
        """A short hash of the trust bundle: changes exactly when the bundle changes."""
        return hashlib.sha256(self.trust_bundle_pem()).hexdigest()[:16]

    def next_change_at(self) -> datetime | None:
        """The next moment the signer or the bundle changes as time passes (``None``: none planned)."""
        now = self.clock()
        times = [g.signing_from for g in self._generations if g.signing_from > now]
        times += [g.trusted_until for g in self._generations if g.trusted_until and g.trusted_until > now]
        return min(times, default=None)

    # ---- issuing

    def issue(
        self, spiffe_id: str, ttl: timedelta = DEFAULT_WORKLOAD_TTL, dns_names: Sequence[str] = ()
    ) -> IssuedCertificate:
        """Issue a workload certificate (X.509-SVID) for ``spiffe_id``.

        Args:
            spiffe_id: ``spiffe://<this trust domain>/...``.
            ttl: lifetime (default 24 h); clipped so the leaf never outlives its signer.
            dns_names: DNS SANs beside the SPIFFE ID (a server reached by name over HTTPS).

        Returns:
            the :class:`IssuedCertificate`, with ``renew_at`` at half-life ± jitter.

        Raises:
            InvalidSpiffeId: ``spiffe_id`` is not a valid SPIFFE ID.
            CAError: the ID is of another trust domain or has no path, or ``ttl`` is not positive, or the
                signer has expired.
        """
        sid = parse_spiffe_id(spiffe_id)
        if sid.trust_domain != self.trust_domain:
            raise CAError(f"{spiffe_id} is not in trust domain {self.trust_domain!r}")
        if not sid.path:
            raise CAError(f"{spiffe_id} names the trust domain, not a workload")
        if ttl <= timedelta(0):
            raise CAError(f"ttl must be positive, got {ttl}")
        now = self.clock()
        gen = self._signing(now)
        not_after = min(now + ttl, gen.signer.not_valid_after_utc)
        if not_after <= now:
            raise CAError(f"the signing certificate of generation {gen.id} has expired; rotate the root")
        key = new_key(self.key_type)
        cert = workload_certificate(
            spiffe_uri=sid.uri,
            key=key,
            signer=gen.signer,
            signer_key=gen.signer_key,
            now=now,
            not_after=not_after,
            dns_names=dns_names,
        )
        lifetime = not_after - now
        factor = 0.5 + self._rng.uniform(-self.renew_jitter, self.renew_jitter)
        leaf = cert_pem(cert)
        return IssuedCertificate(
            spiffe_id=sid.uri,
            cert_pem=leaf,
            chain_pem=leaf + b"".join(cert_pem(c) for c in gen.intermediates),
            key_pem=key_pem(key),
            not_before=now - BACKDATE,
            not_after=not_after,
            renew_at=now + lifetime * factor,
            serial=cert.serial_number,
            generation=gen.id,
        )

    # ---- rotation

    def rotate_root(
        self,
        *,
        overlap: timedelta = DEFAULT_OVERLAP,
        activate_after: timedelta = DEFAULT_ACTIVATE_AFTER,
        root_cert_pem: bytes | None = None,
        root_key_pem: bytes | None = None,
    ) -> x509.Certificate:
        """Start a new generation with a new root (or a new intermediate under a given root).

        The new root is trusted at once; it signs from ``now + activate_after``; every older root leaves
        the bundle at ``now + overlap`` (or when it expires, if sooner).

        Args:
            overlap: how long older roots stay trusted (default 24 h: the default workload lifetime).
            activate_after: delay before the new authority signs (default 30 s), so every Envoy has the
                new root in its bundle before it meets a certificate signed by it.
            root_cert_pem, root_key_pem: a new user root (intermediate mode); without them a self-signed
                root is made.

        Returns:
            the new root certificate.

        Raises:
            CAError: ``activate_after`` is negative or not shorter than ``overlap``, or the given root is
                not usable.
        """
        if activate_after < timedelta(0) or activate_after >= overlap:
            raise CAError("activate_after must be >= 0 and shorter than overlap")
        if (root_cert_pem is None) != (root_key_pem is None):
            raise CAError("give both the root certificate and its key, or neither")
        self.reload_if_changed()
        now = self.clock()
        new = self._make_generation(
            self.generation + 1, now, root_cert_pem, root_key_pem, now + activate_after
        )
        for g in self._generations:
            if g.trusted_until is None or g.trusted_until > now + overlap:
                g.trusted_until = now + overlap
        self._generations.append(new)
        # generations out of the bundle and no longer signing are forgotten (their key files too)
        keep = [g for g in self._generations if g.trusted_until is None or g.trusted_until > now]
        for g in self._generations:
            if g not in keep:
                for name in ("signer-key.pem", "signer-cert.pem", "root-cert.pem"):
                    (self.dir / f"gen-{g.id}" / name).unlink(missing_ok=True)
        self._generations = keep
        self._save()
        return new.root


__all__ = [
    "BACKDATE",
    "CAError",
    "CertificateAuthority",
    "Clock",
    "IssuedCertificate",
    "KeyType",
    "ManualClock",
    "fingerprint",
    "utc_now",
]
