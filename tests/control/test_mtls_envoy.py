"""Mesh mTLS through real Envoys: SPIFFE certificates from the CA, served over SDS on ADS (MiniAds).

Sidecar A (node ``a``, ``sa/a``) has an outbound listener whose clusters (over CDS) dial sidecar B over mTLS.
Sidecar B (node ``b``, ``sa/b``) has a STRICT inbound listener (with an RBAC filter allowing only ``sa/a``)
and a PERMISSIVE one, both in front of the echo app, passing the verified peer ID in XFCC.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401  (registers the type)
    http_connection_manager_pb2,
)
from google.protobuf.json_format import MessageToDict, ParseDict

from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.pki.sds import SecretProvider
from envoykit.control.translate.tls import MtlsMode, inbound_filter_chains, inbound_listener_filters
from envoykit.control.xds.tokens import NodeTokens
from envoykit.core import EnvoyProcess, free_port
from envoykit.core.spiffe import spiffe_id
from tests.control.mtls_harness import (
    MiniAds,
    client_ssl_context,
    mesh_cluster,
    sidecar_bootstrap,
    xfcc_hcm,
)
from tests.envoycfg import cluster, http_listener, route_to
from tests.upstream import EchoServer

pytestmark = pytest.mark.envoy

TD = "mesh.local"
A = spiffe_id(TD, "default", "a")
B = spiffe_id(TD, "default", "b")
C = spiffe_id(TD, "default", "c")


def _d(msg: Any) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def rbac_only(principal: str) -> dict[str, Any]:
    """Envoy RBAC http filter allowing only the authenticated ``principal`` (the peer's URI SAN)."""
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "only": {
                        "permissions": [{"any": True}],
                        "principals": [{"authenticated": {"principal_name": {"exact": principal}}}],
                    }
                },
            },
        },
    }


def inbound_listener(
    name: str, port: int, mode: MtlsMode, http_filters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An inbound sidecar listener in front of the ``echo`` cluster, built with envoykit.control.translate.tls."""
    listener = http_listener(port, [route_to("echo")], http_filters, name=name, hcm_extra=xfcc_hcm())
    hcm = ParseDict(listener["filter_chains"][0]["filters"][0], listener_components_pb2.Filter())
    listener["filter_chains"] = [_d(c) for c in inbound_filter_chains([hcm], TD, mode)]
    listener["listener_filters"] = [_d(f) for f in inbound_listener_filters(mode)]
    return listener


@dataclass
class Mesh:
    state: Path
    ca: CertificateAuthority
    provider: SecretProvider
    tokens: NodeTokens
    ads: MiniAds
    echo: EchoServer
    a: EnvoyProcess
    b: EnvoyProcess
    a_port: int
    strict_port: int
    permissive_port: int

    def call(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.a_port}{path}", timeout=10, **kw)

    def xfcc(self) -> str:
        return str(self.echo.requests[-1]["headers"].get("x-forwarded-client-cert", ""))


StartMesh = Callable[..., Mesh]


@pytest.fixture
def mesh(tmp_path: Path, envoy: Callable[..., EnvoyProcess], echo: EchoServer) -> Iterator[StartMesh]:
    """Start the CA, MiniAds and sidecars A and B; ``mesh(ttl=...)`` sets the workload certificate TTL."""
    stops: list[Callable[[], None]] = []

    def start(ttl: timedelta = timedelta(hours=24)) -> Mesh:
        state = tmp_path / "state"
        ca = CertificateAuthority(state, TD)
        provider = SecretProvider(ca, ttl=ttl)
        tokens = NodeTokens(state)
        ads = MiniAds(provider, {"a": A, "b": B, "c": C}, tokens).__enter__()
        stops.append(lambda: ads.__exit__(None, None, None))
        provider.on_change = ads.push
        strict_port, permissive_port, a_port = free_port(), free_port(), free_port()
        ads.set_clusters(
            "a",
            [
                mesh_cluster("b_strict", strict_port, B),
                mesh_cluster("b_permissive", permissive_port, B),
                mesh_cluster("b_wrong", strict_port, spiffe_id(TD, "default", "not-b")),
            ],
        )
        b = envoy(
            sidecar_bootstrap(
                "b",
                ads,
                tokens.token_for("b"),
                [
                    inbound_listener("strict", strict_port, "STRICT", [rbac_only(A)]),
                    inbound_listener("permissive", permissive_port, "PERMISSIVE"),
                ],
                [cluster("echo", echo.port)],
            ),
            name="sidecar-b",
        )
        routes = [
            route_to("b_wrong", "/wrong"),
            route_to("b_permissive", "/permissive"),
            route_to("b_strict", "/"),
        ]
        outbound = http_listener(a_port, routes, name="outbound")
        # the clusters come later over CDS
        outbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["validate_clusters"] = (
            False
        )
        a = envoy(sidecar_bootstrap("a", ads, tokens.token_for("a"), [outbound]), name="sidecar-a")
        return Mesh(state, ca, provider, tokens, ads, echo, a, b, a_port, strict_port, permissive_port)

    yield start
    for stop in stops:
        stop()


def test_a_to_b_over_mtls_and_b_sees_a_spiffe_id(mesh: StartMesh) -> None:
    m = mesh()
    r = m.call("/hello")
    assert r.status_code == 200, r.text
    xfcc = m.xfcc()
    assert f"URI={A}" in xfcc and f"By={B}" in xfcc
    assert m.a.stats("cluster.b_strict.ssl.handshake")["cluster.b_strict.ssl.handshake"] >= 1
    # both Envoys hold exactly the certificates the CA issued, and ACKed them
    a_cert = m.provider.secrets_for_node("a", A)[0].tls_certificate.certificate_chain.inline_bytes
    serial = x509.load_pem_x509_certificate(a_cert).serial_number
    assert f"{serial:x}" in m.a.admin("/certs").lower()
    assert (
        "b",
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        m.provider.version("b"),
    ) in (m.ads.acks)
    assert m.ads.nacks == []


def test_plaintext_refused_in_strict_accepted_in_permissive(mesh: StartMesh) -> None:
    m = mesh()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{m.strict_port}/", timeout=5)
    forged = {"x-forwarded-client-cert": f"URI={A}"}
    r = httpx.get(f"http://127.0.0.1:{m.permissive_port}/plain", headers=forged, timeout=5)
    assert r.status_code == 200
    assert "URI=" not in m.xfcc()  # a plaintext client proves nothing; a forged XFCC is dropped
    r = m.call("/permissive/tls")
    assert r.status_code == 200 and f"URI={A}" in m.xfcc()  # mesh clients still use mTLS there


def _client(m: Mesh, chain: bytes, key: bytes) -> httpx.Client:
    return httpx.Client(verify=client_ssl_context(chain, key, m.ca.trust_bundle_pem()), timeout=5)


def test_peers_outside_the_trust_domain_are_refused(mesh: StartMesh, tmp_path: Path) -> None:
    m = mesh()
    url = f"https://127.0.0.1:{m.strict_port}/"
    # a workload of the mesh (sa/a) gets through; another mesh identity is authenticated but not allowed
    a = m.ca.issue(A)
    with _client(m, a.chain_pem, a.key_pem) as c:
        assert c.get(url).status_code == 200
    assert f"URI={A}" in m.xfcc()
    other = m.ca.issue(C)
    with _client(m, other.chain_pem, other.key_pem) as c:
        assert c.get(url).status_code == 403  # RBAC: principal sa/c is not sa/a
    stat = f"listener.127.0.0.1_{m.strict_port}.ssl."
    # a certificate from another trust domain's CA: chain not trusted
    foreign = CertificateAuthority(tmp_path / "foreign", "other.td").issue(
        "spiffe://other.td/ns/default/sa/a"
    )
    with _client(m, foreign.chain_pem, foreign.key_pem) as c, pytest.raises(httpx.TransportError):
        c.get(url)
    assert m.b.stats(stat + "fail_verify_error")[stat + "fail_verify_error"] >= 1
    # even signed by the mesh's own root, a SPIFFE ID of another trust domain fails the SAN check
    signer_key = serialization.load_pem_private_key((m.state / "ca/gen-1/signer-key.pem").read_bytes(), None)
    assert isinstance(signer_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = m.ca.clock()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(m.ca.root_certificate().subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://other.td/ns/default/sa/a")]
            ),
            critical=True,
        )
        .sign(signer_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with (
        _client(m, leaf.public_bytes(serialization.Encoding.PEM), key_pem) as c,
        pytest.raises(httpx.TransportError),
    ):
        c.get(url)
    assert m.b.stats(stat + "fail_verify_san")[stat + "fail_verify_san"] >= 1


def test_outbound_cluster_verifying_the_wrong_spiffe_id_fails(mesh: StartMesh) -> None:
    m = mesh()
    seen = len(m.echo.requests)
    r = m.call("/wrong")
    assert r.status_code == 503
    assert len(m.echo.requests) == seen  # B's app never got it
    assert m.a.stats("cluster.b_wrong.ssl.fail_verify_san")["cluster.b_wrong.ssl.fail_verify_san"] >= 1
    assert m.call("/right").status_code == 200


def test_impersonating_node_gets_no_secrets(mesh: StartMesh, envoy: Callable[..., EnvoyProcess]) -> None:
    m = mesh()
    # node "c" holds its own token but claims to be "b" to obtain sa/b's certificate
    evil_cfg = sidecar_bootstrap(
        "b", m.ads, m.tokens.token_for("c"), [http_listener(free_port(), [], name="x")]
    )
    evil_cfg["dynamic_resources"]["cds_config"]["initial_fetch_timeout"] = "0.5s"
    issued_before = m.provider.version("b")
    evil = envoy(evil_cfg, name="impostor")
    deadline = time.monotonic() + 10
    while "b" not in m.ads.refused and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "b" in m.ads.refused
    # the refusal is recorded before Envoy sees its stream closed: poll for the disconnect
    state = "control_plane.connected_state"
    while evil.stats(state)[state] != 0 and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert evil.stats(state)[state] == 0
    assert json.loads(evil.admin("/certs")).get("certificates", []) == []
    assert m.provider.version("b") == issued_before  # nothing new issued for the impostor
    # the honest sidecars stay connected
    assert m.b.stats("control_plane.connected_state")["control_plane.connected_state"] == 1


def test_rotation_while_traffic_flows_fails_no_request(mesh: StartMesh) -> None:
    # short-lived certificates: renewals happen during the test, besides the root rotation
    m = mesh(ttl=timedelta(seconds=16))
    stop = threading.Event()
    results: list[int | str] = []
    hashes_seen: set[str] = set()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get(f"http://127.0.0.1:{m.a_port}/t")
                    results.append(r.status_code)
                    if r.status_code == 200:
                        xfcc = r.json()["headers"].get("x-forwarded-client-cert", "")
                        hashes_seen.add(xfcc.split("Hash=")[1].split(";")[0])
                except httpx.HTTPError as exc:
                    results.append(repr(exc))
                time.sleep(0.02)

    def refresher() -> None:  # what the control plane does with provider.run()
        while not stop.wait(0.2):
            m.provider.refresh()

    threads = [threading.Thread(target=traffic), threading.Thread(target=refresher)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        old_root = m.ca.root_certificate()
        new_root = m.ca.rotate_root(overlap=timedelta(seconds=8), activate_after=timedelta(seconds=2))
        # run past the overlap (the old root leaves every bundle) and past the renewal (at half of 16 s)
        # of the certificate issued when the new authority started signing
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (len(m.ca.trusted_roots()) != 1 or len(hashes_seen) < 3):
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [r for r in results if r != 200]
    assert len(results) > 50
    assert failures == [], failures[:5]
    # A's certificate changed at least twice (the switch to the new authority, then a renewal)
    assert len(hashes_seen) >= 3, hashes_seen
    # both Envoys now hold only the new root and certificates signed by it
    for proxy in (m.a, m.b):
        certs = proxy.admin("/certs").lower()
        assert f"{new_root.serial_number:x}" in certs
        assert f"{old_root.serial_number:x}" not in certs
    assert m.ads.nacks == []
