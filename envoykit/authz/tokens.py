"""Mint test tokens (``envoykit token``) and make signing keys with their JWKS."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def generate_key(alg: str = "RS256") -> PrivateKey:
    """A new private key for ``alg`` (RS256: RSA 2048; ES256: P-256; EdDSA: Ed25519)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg}")


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK (RFC 7517) of ``key`` with ``kid`` and ``use: sig``."""
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        jwk, alg = json.loads(RSAAlgorithm.to_jwk(pub)), "RS256"
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        jwk, alg = json.loads(ECAlgorithm.to_jwk(pub)), "ES256"
    else:
        jwk, alg = json.loads(OKPAlgorithm.to_jwk(pub)), "EdDSA"
    jwk.update(kid=kid, use="sig", alg=alg)
    return dict(jwk)


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM of ``key`` (unencrypted)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(path: str | Path) -> PrivateKey:
    """Load a PEM private key.

    Raises:
        ValueError: not a supported private key.
    """
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def mint(
    key: PrivateKey | bytes,
    *,
    issuer: str,
    subject: str,
    audience: str | list[str] | None = None,
    ttl_s: int = 3600,
    kid: str | None = None,
    claims: dict[str, Any] | None = None,
    now: float | None = None,
    alg: str | None = None,
) -> str:
    """Sign a JWT. ``key`` bytes mean an HS256 secret. ``ttl_s`` sets ``exp`` (seconds from ``now``)."""
    t = int(now if now is not None else time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "iat": t,
        "nbf": t,
        "exp": t + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if audience is not None:
        payload["aud"] = audience
    payload.update(claims or {})
    if isinstance(key, bytes):
        alg = alg or "HS256"
    elif alg is None:
        alg = (
            "RS256"
            if isinstance(key, rsa.RSAPrivateKey)
            else "ES256"
            if isinstance(key, ec.EllipticCurvePrivateKey)
            else "EdDSA"
        )
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)
