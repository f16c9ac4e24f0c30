"""The serialised answers the lean server sends are the CheckResponses the grpcio path builds."""

from __future__ import annotations

from envoy.service.auth.v3 import external_auth_pb2 as ea

from envoykit.authz import allow, deny
from envoykit.authz.decisions import Allow, Deny
from envoykit.authz.response import response_bytes, response_for


def test_cached_bytes_equal_the_built_response() -> None:
    decisions: list[Allow | Deny] = [
        Allow(),
        allow({"x-authz-user": "alice"}, remove_headers=["x-secret"], response_headers={"x-r": "1"}),
        allow({"x-authz-user": "bob"}),
        allow(metadata={"tier": "gold"}),
        deny(401, "token required", {"www-authenticate": "Bearer"}),
        deny(403, "RBAC: access denied"),
    ]
    for d in decisions * 2:  # the second round comes from the cache
        got = ea.CheckResponse.FromString(response_bytes(d))
        assert got == response_for(d), d
    assert (
        ea.CheckResponse.FromString(response_bytes(decisions[1])).ok_response.headers[0].header.value
        == "alice"
    )
    assert (
        ea.CheckResponse.FromString(response_bytes(decisions[2])).ok_response.headers[0].header.value == "bob"
    )
