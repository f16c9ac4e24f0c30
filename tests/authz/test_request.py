"""The Request view: paths, queries, headers, SPIFFE principals, built from a real CheckRequest."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ea

from envoykit.authz import Request, allow, normalize_path, peer_spiffe_id
from envoykit.authz.decisions import Allow
from envoykit.authz.request import _FIELDS, Headers


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("/a/b", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/a/%2e%2e/admin", "/admin"),
        ("/a%2F..%2Fadmin", "/admin"),
        ("//a//b", "/a/b"),
        ("/api/", "/api/"),
        ("/../../etc", "/etc"),
        ("/caf%C3%A9", "/caf%C3%A9"),  # only unreserved escapes are decoded, as Envoy does
        ("/a%20b", "/a%20b"),
        ("/%41%7e%2D/x", "/A~-/x"),
        ("/a%5Cb\\c", "/a/b/c"),
        ("/a;jsessionid=1/b;v=2", "/a/b"),
        ("/a/b;x/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/x?q=/../y", "/x"),
    ],
)
def test_normalize_path(raw: str, want: str) -> None:
    assert normalize_path(raw) == want


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/v1/..;/internal/x", "';' parameters on the segment '..;'"),
        ("/v1/.;x/a", "';' parameters on the segment '.;x'"),
        ("/v1/;x/a", "';' parameters on the segment ';x'"),
        ("/v1/%2e%2e;/a", "';' parameters on the segment '..;'"),
        ("/v1/..%3B/internal/x", "encoded ';' (%3B) in the path"),
        ("/v1/a%3bb", "encoded ';' (%3B) in the path"),
        ("/v1/a;b/c", None),
        ("/v1/...;/c", None),
    ],
)
def test_path_ambiguity(raw: str, why: str | None) -> None:
    assert Request(path=raw).path_ambiguity == why


def test_path_and_query_are_separate() -> None:
    r = Request(path="/s%2fx/../y?q=a%20b&q=c&empty=&flag#frag")
    assert r.raw_path == "/s%2fx/../y"
    assert r.path == "/s/y"
    assert r.query == {"q": ["a b", "c"], "empty": [""], "flag": [""]}
    assert r.raw_query == "q=a%20b&q=c&empty=&flag"


def _check_request() -> ea.CheckRequest:
    cr = ea.CheckRequest()
    h = cr.attributes.request.http
    h.method = "post"
    h.path = "/v1/items?id=7"
    h.host = "API.Example.com:8443"
    h.id = "rid-1"
    h.headers["x-multi"] = "a,b"  # Envoy joins repeated headers in `headers`
    for k, v in [("X-Multi", "a"), ("x-multi", "b"), ("Cookie", "sid=abc; theme=dark")]:
        hv = h.header_map.headers.add()
        hv.key = k
        hv.raw_value = v.encode()
    cr.attributes.source.principal = "spiffe://cluster.local/ns/shop/sa/frontend"
    cr.attributes.source.address.socket_address.address = "10.1.2.3"
    cr.attributes.source.address.socket_address.port_value = 5555
    cr.attributes.destination.principal = "spiffe://cluster.local/ns/shop/sa/backend"
    cr.attributes.context_extensions["route"] = "items"
    cr.attributes.tls_session.sni = "backend.shop"
    h.raw_body = b'{"a":1}'
    return cr


def test_from_check_request() -> None:
    r = Request.from_check_request(_check_request())
    assert r.method == "POST" and r.path == "/v1/items" and r.query == {"id": ["7"]}
    assert r.host == "api.example.com:8443" and r.hostname == "api.example.com"
    assert r.headers.getall("x-multi") == ["a", "b"] and r.headers["X-MULTI"] == "a"
    assert r.cookie("theme") == "dark" and r.cookie("nope") is None
    assert r.source_spiffe is not None and r.source_spiffe.service_account == "frontend"
    assert r.source_spiffe.namespace == "shop"
    assert r.identity.principal == "spiffe://cluster.local/ns/shop/sa/frontend"
    assert r.destination_spiffe is not None and r.destination_spiffe.service_account == "backend"
    assert (r.source_address, r.source_port, r.sni, r.request_id) == (
        "10.1.2.3",
        5555,
        "backend.shop",
        "rid-1",
    )
    assert r.context_extensions["route"] == "items" and r.body == b'{"a":1}'


def test_joined_headers_without_header_map() -> None:
    cr = _check_request()
    cr.attributes.request.http.ClearField("header_map")
    r = Request.from_check_request(cr)
    assert r.headers.getall("x-multi") == ["a,b"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("spiffe://cluster.local/ns/a/sa/b", True),
        ("spiffe://example.org", True),
        ("https://cluster.local/ns/a/sa/b", False),  # another scheme: Envoy still sends it as principal
        ("spiffe://Cluster.Local/ns/a/sa/b", False),  # trust domain must be lower case
        ("spiffe://td/ns/../sa/b", False),
        ("spiffe://td/ns/a/sa/b?x=1", False),
        ("spiffe:///ns/a", False),
    ],
)
def test_spiffe_parsing(value: str, ok: bool) -> None:
    assert (peer_spiffe_id(value) is not None) is ok


def test_non_spiffe_principal_is_not_a_spiffe_identity() -> None:
    r = Request(source_principal="https://evil.example/ns/default/sa/frontend")
    assert r.source_spiffe is None and r.identity.spiffe is None
    assert r.identity.principal.startswith("https://")


@pytest.mark.parametrize(
    "raw",
    [
        "/v1/..;/a",
        "/v1/.;x/a",
        "/v1/;x",
        "/v1/a%3Bb",
        "/v1/a%3bb",
        "/..;",
        "/v1/...;/c",
        "/v1/a;b/c",
        "/x..;/y",
    ],
)
def test_envoy_side_ambiguity_parts_agree(raw: str) -> None:
    # what compile's DENY filter matches (substrings) equals what the Python path calls ambiguous
    from envoykit.authz.paths import AMBIGUOUS_PATH_PARTS

    assert any(p in raw.lower() for p in AMBIGUOUS_PATH_PARTS) == (
        Request(path=raw).path_ambiguity is not None
    )


def test_view_reads_every_field_as_an_eager_request_would() -> None:
    """The lazy view (one descriptor per field, read on first access) equals a Request built up front
    from the same message, field by field, whichever field is read first."""
    cr = _check_request()
    cr.attributes.destination.address.socket_address.address = "10.9.9.9"
    cr.attributes.destination.address.socket_address.port_value = 8443
    cr.attributes.destination.labels["app"] = "backend"
    cr.attributes.source.certificate = "-----BEGIN CERTIFICATE-----"
    h, a = cr.attributes.request.http, cr.attributes
    h.scheme, h.protocol = "https", "HTTP/2"
    eager = Request(
        method=h.method,
        path=h.path,
        host=h.host,
        headers=Headers.from_pairs([(x.key, x.raw_value.decode()) for x in h.header_map.headers]),
        scheme=h.scheme,
        protocol=h.protocol,
        source_address=a.source.address.socket_address.address,
        source_port=a.source.address.socket_address.port_value,
        source_principal=a.source.principal,
        destination_principal=a.destination.principal,
        source_certificate=a.source.certificate,
        sni=a.tls_session.sni,
        context_extensions=dict(a.context_extensions),
        body=h.raw_body,
        request_id=h.id,
        destination_address=a.destination.address.socket_address.address,
        destination_port=a.destination.address.socket_address.port_value,
        destination_labels=dict(a.destination.labels),
    )
    names = [n for n in _FIELDS if not n.startswith("_")]
    names += ["raw_path", "path", "path_ambiguity", "raw_query", "query", "hostname", "remote_address"]
    for first in names:  # the order of reads must not matter
        view = Request.from_check_request(cr)
        for name in [first, *names]:
            got, want = getattr(view, name), getattr(eager, name)
            if name == "headers":
                got, want = {k: got.getall(k) for k in got}, {k: want.getall(k) for k in want}
            elif name == "context_extensions":
                got = dict(got)
            assert got == want, (first, name)
    view = Request.from_check_request(cr)
    with pytest.raises(AttributeError):
        _ = view.no_such_field  # type: ignore[attr-defined]


@pytest.mark.parametrize("first", ["raw_path", "path", "path_ambiguity"])
def test_path_facts_agree_whichever_is_read_first(first: str) -> None:
    cr = _check_request()
    cr.attributes.request.http.path = "/v1/..;/a/%2e%2e/b?x=1#f"
    view = Request.from_check_request(cr)
    getattr(view, first)
    assert (view.raw_path, view.path, view.path_ambiguity) == (
        "/v1/..;/a/%2e%2e/b",
        normalize_path("/v1/..;/a/%2e%2e/b"),
        "';' parameters on the segment '..;'",
    )


def test_allow_lowers_names_and_keeps_empty_fields_empty() -> None:
    a = allow(
        {"X-User": "alice"}, remove_headers=["X-Secret"], metadata={"t": 1}, response_headers={"X-R": "1"}
    )
    assert (a.headers, a.remove_headers, a.metadata, a.response_headers) == (
        {"x-user": "alice"},
        ("x-secret",),
        {"t": 1},
        {"x-r": "1"},
    )
    assert allow() == Allow() and allow({}, remove_headers=[]) == Allow()
    src: dict[str, object] = {"t": 1}
    assert allow(metadata=src).metadata is not src  # a copy: the rule's dict may change later
