"""JWT verification: algorithms, claims, leeway, alg none, unknown kid then JWKS rotation, API keys."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from envoykit.authz import Engine, Request, load_policy
from envoykit.authz.authn_config import AuthnConfig, JwtIssuer
from envoykit.authz.jwt_verify import Authenticator, TokenError
from envoykit.authz.tokens import generate_key, mint, public_jwk
from envoykit.core import ConfigError

ISS = "https://issuer.test"


def authn(tmp_path: Path, keys: list, **issuer) -> Authenticator:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    cfg = AuthnConfig(jwt=(JwtIssuer(issuer=ISS, audiences=("mesh",), jwks_file="jwks.json", **issuer),))
    return Authenticator(cfg, tmp_path)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_algorithms(tmp_path: Path, alg: str) -> None:
    key = generate_key(alg)
    a = authn(tmp_path, [public_jwk(key, "k")], algorithms=(alg,))
    claims, iss = a.verify(mint(key, issuer=ISS, subject="u", audience="mesh", kid="k"))
    assert claims["sub"] == "u" and iss.issuer == ISS


def test_hs256(tmp_path: Path) -> None:
    cfg = AuthnConfig(
        jwt=(JwtIssuer(issuer=ISS, algorithms=("HS256",), hs256_secret="s3cret-s3cret-s3cret-s3cret-s3cret"),)
    )
    a = Authenticator(cfg, tmp_path)
    assert a.verify(mint(b"s3cret-s3cret-s3cret-s3cret-s3cret", issuer=ISS, subject="u"))[0]["sub"] == "u"
    with pytest.raises(TokenError, match="Signature"):
        a.verify(mint(b"other-secret-other-secret-other-secret", issuer=ISS, subject="u"))


@pytest.fixture
def es(tmp_path: Path):
    key = generate_key("ES256")
    return key, authn(tmp_path, [public_jwk(key, "k1")], leeway_s=30)


def test_expired_not_yet_valid_and_leeway(es) -> None:
    key, a = es
    now = time.time()
    with pytest.raises(TokenError, match="Expired"):
        a.verify(mint(key, issuer=ISS, subject="u", audience="mesh", kid="k1", now=now - 7200, ttl_s=60))
    # expired 10 s ago: within the 30 s leeway
    a.verify(mint(key, issuer=ISS, subject="u", audience="mesh", kid="k1", now=now - 70, ttl_s=60))
    with pytest.raises(TokenError, match="Immature"):
        a.verify(mint(key, issuer=ISS, subject="u", audience="mesh", kid="k1", now=now + 600))


def test_wrong_audience_issuer_signature(es) -> None:
    key, a = es
    with pytest.raises(TokenError, match="Audience"):
        a.verify(mint(key, issuer=ISS, subject="u", audience="other", kid="k1"))
    with pytest.raises(TokenError, match="unknown issuer"):
        a.verify(mint(key, issuer="https://evil", subject="u", audience="mesh", kid="k1"))
    other = generate_key("ES256")
    with pytest.raises(TokenError, match="Signature"):
        a.verify(mint(other, issuer=ISS, subject="u", audience="mesh", kid="k1"))


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_alg_none_always_refused(es) -> None:
    _, a = es
    tok = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'iss': ISS, 'sub': 'u', 'aud': 'mesh', 'exp': 2**31})}."
    with pytest.raises(TokenError, match="none"):
        a.verify(tok)
    tok = f"{_b64({'alg': 'NONE'})}.{_b64({'iss': ISS, 'sub': 'u'})}."
    with pytest.raises(TokenError, match="none"):
        a.verify(tok)


def test_algorithm_not_allowed_for_issuer(tmp_path: Path) -> None:
    key = generate_key("RS256")
    a = authn(tmp_path, [public_jwk(key, "k")], algorithms=("ES256",))
    with pytest.raises(TokenError, match="not allowed"):
        a.verify(mint(key, issuer=ISS, subject="u", audience="mesh", kid="k"))


def test_malformed(es) -> None:
    with pytest.raises(TokenError, match="malformed"):
        es[1].verify("not.a.jwt")


class _Jwks(BaseHTTPRequestHandler):
    doc: dict = {"keys": []}
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = json.dumps(type(self).doc).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:
        pass


def test_unknown_kid_refreshes_jwks_from_url(tmp_path: Path) -> None:
    old, new = generate_key("ES256"), generate_key("ES256")
    _Jwks.doc = {"keys": [public_jwk(old, "old")]}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/jwks"
        cfg = AuthnConfig(
            jwt=(JwtIssuer(issuer=ISS, jwks_uri=url, jwks_min_refresh_s=0, jwks_refresh_wait_ms=150),)
        )
        a = Authenticator(cfg, tmp_path)
        assert _Jwks.hits == 1  # fetched at load, not on the request path
        a.verify(mint(old, issuer=ISS, subject="u", kid="old"))
        _Jwks.doc = {"keys": [public_jwk(old, "old"), public_jwk(new, "new")]}  # the IdP rotates
        claims, _ = a.verify(mint(new, issuer=ISS, subject="rotated", kid="new"))
        assert claims["sub"] == "rotated" and _Jwks.hits == 2
        with pytest.raises(TokenError, match="no key 'ghost'"):
            a.verify(mint(new, issuer=ISS, subject="u", kid="ghost"))
    finally:
        srv.shutdown()


def test_verified_tokens_are_cached(es) -> None:
    key, a = es
    tok = mint(key, issuer=ISS, subject="u", audience="mesh", kid="k1")
    a.verify(tok)
    start = time.perf_counter()
    for _ in range(1000):
        a.verify(tok)
    assert (time.perf_counter() - start) / 1000 < 50e-6  # a dict lookup, not a signature check


def test_bad_token_is_401_and_never_partially_trusted(tmp_path: Path) -> None:
    key = generate_key("ES256")
    d = tmp_path / "p"
    d.mkdir()
    (d / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key, "k")]}))
    (d / "authn.yaml").write_text(
        f"jwt:\n  - issuer: {ISS}\n    jwks_file: jwks.json\n    from_cookies: [session]\n"
    )
    (d / "r.py").write_text("from envoykit.authz import *\n@allow_rule()\ndef any_user(req): return True\n")
    pol = load_policy(d)
    good = mint(key, issuer=ISS, subject="u", kid="k")
    v = Engine().check(pol, Request(headers={"authorization": f"Bearer {good}"}))
    assert v.decision.__class__.__name__ == "Allow"
    v = Engine().check(pol, Request(headers={"cookie": f"session={good}"}))
    assert v.decision.__class__.__name__ == "Allow"
    req = Request(headers={"authorization": f"Bearer {good[:-4]}AAAA"})
    v = Engine().check(pol, req)
    assert v.decision.status == 401 and v.rule == "<authn>"  # type: ignore[union-attr]
    assert req.identity.claims is None


def test_api_keys(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    digest = hashlib.sha256(b"k-123").hexdigest()
    (d / "authn.yaml").write_text(
        f"api_keys:\n  header: x-api-key\n  keys:\n    - name: ci-bot\n      sha256: {digest}\n"
    )
    (d / "r.py").write_text(
        "from envoykit.authz import *\n@allow_rule()\ndef bots(req): return req.identity.api_key == 'ci-bot'\n"
    )
    pol = load_policy(d)
    assert Engine().check(pol, Request(headers={"x-api-key": "k-123"})).decision.__class__.__name__ == "Allow"
    assert Engine().check(pol, Request(headers={"x-api-key": "nope"})).decision.status == 401  # type: ignore[union-attr]
    assert Engine().check(pol, Request()).decision.status == 403  # type: ignore[union-attr]


def test_authn_yaml_errors_name_file_line_field(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "authn.yaml").write_text(
        "jwt:\n  - issuer: x\n    algorithms: [RS256]\n    leeway_s: -5\n    jwks_file: j.json\n"
    )
    with pytest.raises(ConfigError) as e:
        load_policy(d)
    assert e.value.line == 4 and e.value.field == "jwt.0.leeway_s"
    (d / "authn.yaml").write_text("jwt:\n  - issuer: x\n    algorithms: [none]\n")
    with pytest.raises(ConfigError, match="algorithms"):
        load_policy(d)
