"""SDS secrets for each node: its workload certificate (``default``) and the trust bundle (``ROOTCA``).

Public API::

    provider = SecretProvider(ca, on_change=lambda node_id: ...)
    provider.secrets_for_node(node_id, spiffe_id) -> list[Secret]   # [default, ROOTCA]
    provider.version(node_id) -> str          # changes exactly when that node's secrets change
    provider.refresh() -> set[str]            # renew what is due; node IDs whose secrets changed
    provider.next_refresh_at() -> datetime | None
    await provider.run()                      # call refresh() whenever something becomes due

The secret names are Istio's: ``default`` holds ``tls_certificate`` (chain + key, inline bytes) and
``ROOTCA`` holds ``validation_context.trusted_ca`` (the trust bundle). Messages are
``envoy.extensions.transport_sockets.tls.v3.Secret`` (proto ``envoy/extensions/transport_sockets/tls/v3/
secret.proto``), served over SDS on the ADS stream (type URL :data:`SECRET_TYPE_URL`).

Certificates are cached per identity (every node with the same SPIFFE ID shares one), renewed at their
``renew_at`` (half-life ± jitter), and re-issued when the CA's signing generation changes. A node's
secrets change when its certificate is renewed or the trust bundle changes (root rotation); then
``on_change(node_id)`` is called for each such node and :meth:`SecretProvider.version` moves on, so the
ADS server pushes a new response.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from envoykit.control.pki.ca import DEFAULT_WORKLOAD_TTL, CertificateAuthority, IssuedCertificate
from envoykit.core.logs import get_logger

#: Istio's name of the secret holding a workload's certificate chain and key.
DEFAULT_SECRET = "default"
#: Istio's name of the secret holding the trust bundle.
ROOTCA_SECRET = "ROOTCA"
SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def tls_certificate_secret(cert: IssuedCertificate, name: str = DEFAULT_SECRET) -> secret_pb2.Secret:
    """A ``Secret`` with ``tls_certificate``: ``certificate_chain`` and ``private_key`` as inline bytes."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain={"inline_bytes": cert.chain_pem},
            private_key={"inline_bytes": cert.key_pem},
        ),
    )


def trust_bundle_secret(bundle_pem: bytes, name: str = ROOTCA_SECRET) -> secret_pb2.Secret:
    """A ``Secret`` with ``validation_context.trusted_ca`` set to the PEM trust bundle (inline bytes)."""
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(trusted_ca={"inline_bytes": bundle_pem}),
    )


class SecretProvider:
    """Issues, caches and renews the SDS secrets of every node.

    Args:
        ca: the mesh CA.
        on_change: called with a node ID (from the thread calling :meth:`refresh`) whenever that node's
            secrets changed and must be pushed again.
        ttl: lifetime of workload certificates (default 24 h).

    Thread-safe: an ADS server may call it from several streams.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        on_change: Callable[[str], None] | None = None,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
    ) -> None:
        self.ca = ca
        self.ttl = ttl
        self.on_change = on_change
        self._lock = threading.RLock()
        self._certs: dict[str, IssuedCertificate] = {}  # SPIFFE ID → current certificate
        self._nodes: dict[str, str] = {}  # node ID → SPIFFE ID
        self._bundle = ca.trust_bundle_pem()
        self._log = get_logger("sds")

    def _cert(self, spiffe_id: str) -> IssuedCertificate:
        cert = self._certs.get(spiffe_id)
        if cert is None:
            cert = self.ca.issue(spiffe_id, self.ttl)
            self._certs[spiffe_id] = cert
            self._log.info(
                "issued", spiffe_id=spiffe_id, serial=f"{cert.serial:x}", not_after=str(cert.not_after)
            )
        return cert

    def secrets_for_node(self, node_id: str, spiffe_id: str) -> list[secret_pb2.Secret]:
        """The ``default`` and ``ROOTCA`` secrets for ``node_id``, whose identity is ``spiffe_id``.

        The caller (the ADS server) decides ``spiffe_id`` from the mesh model after checking the node's
        token: this method trusts it. A node whose identity changed gets the new identity's certificate.

        Raises:
            InvalidSpiffeId, CAError: from :meth:`CertificateAuthority.issue`.
        """
        with self._lock:
            cert = self._cert(spiffe_id)
            self._nodes[node_id] = spiffe_id
            return [tls_certificate_secret(cert), trust_bundle_secret(self._bundle)]

    def version(self, node_id: str) -> str:
        """Version of ``node_id``'s secrets: certificate serial and bundle hash ("" for an unknown node)."""
        with self._lock:
            sid = self._nodes.get(node_id)
            cert = self._certs.get(sid) if sid else None
            if cert is None:
                return ""
            return f"{cert.serial:x}-{hashlib.sha256(self._bundle).hexdigest()[:12]}"

    def forget(self, node_id: str) -> None:
        """Stop tracking ``node_id`` (its stream closed); certificates no node uses are dropped."""
        with self._lock:
            self._nodes.pop(node_id, None)
            used = set(self._nodes.values())
            for sid in [s for s in self._certs if s not in used]:
                del self._certs[sid]

    def refresh(self) -> set[str]:
        """Renew certificates past ``renew_at`` or signed by a generation no longer signing; pick up a new
        trust bundle (also one rotated by another process through the state directory).

        Returns:
            the IDs of nodes whose secrets changed; ``on_change`` was called for each.
        """
        with self._lock:
            self.ca.reload_if_changed()
            now = self.ca.clock()
            signing = self.ca.signing_generation()
            changed_ids: set[str] = set()
            for sid, cert in list(self._certs.items()):
                if now >= cert.renew_at or cert.generation != signing:
                    del self._certs[sid]
                    self._cert(sid)
                    changed_ids.add(sid)
            bundle = self.ca.trust_bundle_pem()
            bundle_changed = bundle != self._bundle
            if bundle_changed:
                self._bundle = bundle
                self._log.info("trust bundle changed", roots=len(self.ca.trusted_roots()))
            nodes = {n for n, sid in self._nodes.items() if bundle_changed or sid in changed_ids}
        if self.on_change is not None:
            for node_id in sorted(nodes):
                self.on_change(node_id)
        return nodes

    def next_refresh_at(self) -> datetime | None:
        """When :meth:`refresh` next has work: the earliest renewal or planned CA change (``None``: never)."""
        with self._lock:
            times = [c.renew_at for c in self._certs.values()]
            ca_next = self.ca.next_change_at()
            if ca_next is not None:
                times.append(ca_next)
            return min(times, default=None)

    async def run(self, max_interval: float = 5.0) -> None:
        """Call :meth:`refresh` whenever something is due, and at least every ``max_interval`` seconds
        (to notice a rotation made by ``envoykit ca rotate`` in another process). Runs until cancelled.

        ``refresh`` runs in a worker thread (``asyncio.to_thread``), so ``on_change`` is called there:
        hand the push to the event loop with ``loop.call_soon_threadsafe``."""
        while True:
            await asyncio.to_thread(self.refresh)
            wait = max_interval
            nxt = self.next_refresh_at()
            if nxt is not None:
                wait = min(wait, max(0.05, (nxt - self.ca.clock()).total_seconds()))
            await asyncio.sleep(wait)
