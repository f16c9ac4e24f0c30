"""The mTLS principal reaches the rule: Envoy terminates mTLS with certificates the test makes."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from envoykit.core import free_port
from tests.authz.conftest import ext_authz_filter
from tests.certs import TestCA
from tests.envoycfg import bootstrap, cluster, http_listener, route_to

RULES = """
from envoykit.authz import allow, allow_rule

@allow_rule()
def frontend_only(req):
    sp = req.identity.spiffe
    if sp and sp.trust_domain == "cluster.local" and sp.service_account == "frontend":
        return allow({"x-caller-principal": req.identity.principal})
"""


def tls_socket(ca: TestCA, server) -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(server.cert)},
                        "private_key": {"filename": str(server.key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(ca.path)}},
            },
        },
    }


@pytest.fixture
def mtls(tmp_path: Path, envoy, echo, authz_server):
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", dns=["localhost"], server=True)
    pol = tmp_path / "policy"
    pol.mkdir()
    (pol / "rules.py").write_text(RULES)
    srv = authz_server(pol)
    port = free_port()
    envoy(
        bootstrap(
            [
                http_listener(
                    port, [route_to("echo")], [ext_authz_filter()], transport_socket=tls_socket(ca, server)
                )
            ],
            [cluster("echo", echo.port), cluster("authz", srv.port, http2=True)],
        )
    )
    return ca, f"https://localhost:{port}/hello"


def client(ca: TestCA, pair) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return httpx.Client(verify=ctx)


def test_spiffe_principal_reaches_the_rule(mtls) -> None:
    ca, url = mtls
    fe = ca.issue("frontend", uris=["spiffe://cluster.local/ns/default/sa/frontend"])
    with client(ca, fe) as c:
        r = c.get(url)
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["x-caller-principal"] == "spiffe://cluster.local/ns/default/sa/frontend"


def test_other_identity_and_other_scheme_refused(mtls) -> None:
    ca, url = mtls
    other = ca.issue("other", uris=["spiffe://cluster.local/ns/default/sa/other"])
    with client(ca, other) as c:
        assert c.get(url).status_code == 403
    # Envoy passes the first URI SAN whatever its scheme; the rule's SPIFFE check refuses it.
    fake = ca.issue("fake", uris=["https://cluster.local/ns/default/sa/frontend"])
    with client(ca, fake) as c:
        assert c.get(url).status_code == 403
    foreign = ca.issue("foreign", uris=["spiffe://evil.example/ns/default/sa/frontend"])
    with client(ca, foreign) as c:
        assert c.get(url).status_code == 403
