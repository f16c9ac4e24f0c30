"""The ``authn.yaml`` model: JWT issuers and API keys (validated with pydantic at load time).

Example::

    jwt:
      - issuer: https://demo.envoykit.local
        audiences: [mesh]
        jwks_file: demo-jwks.json        # or jwks_uri: https://idp.example/.well-known/jwks.json
        algorithms: [RS256, ES256]
        leeway_s: 60
        from_headers: [{name: authorization, prefix: "Bearer "}]
        from_cookies: [session]
    api_keys:
      header: x-api-key
      keys:
        - {name: ci-bot, sha256: 9f86d08...}   # sha256 hex of the key: the key itself never sits in a file
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Alg = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenHeader(_Strict):
    """Where a token may be found: header ``name`` with an optional ``prefix`` (``Bearer ``)."""

    name: str
    prefix: str = ""


class JwtIssuer(_Strict):
    """One trusted token issuer (compare Istio's RequestAuthentication ``jwtRules``)."""

    issuer: str = Field(min_length=1)
    audiences: tuple[str, ...] = ()
    jwks_file: str | None = None
    jwks_uri: str | None = None
    hs256_secret: str | None = Field(default=None, description="inline HMAC secret; prefer hs256_secret_env")
    hs256_secret_env: str | None = None
    algorithms: tuple[Alg, ...] = ("RS256", "ES256", "EdDSA")
    leeway_s: int = Field(default=60, ge=0, le=3600)
    require_exp: bool = True
    from_headers: tuple[TokenHeader, ...] = (TokenHeader(name="authorization", prefix="Bearer "),)
    from_cookies: tuple[str, ...] = ()
    jwks_min_refresh_s: float = Field(default=10.0, ge=0)
    jwks_refresh_wait_ms: int = Field(default=50, ge=0, le=150)
    jwks_fetch_timeout_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _keys_given(self) -> JwtIssuer:
        hs = self.hs256_secret is not None or self.hs256_secret_env is not None
        if "HS256" in self.algorithms and not hs:
            raise ValueError("HS256 needs hs256_secret or hs256_secret_env")
        if any(a != "HS256" for a in self.algorithms) and not (self.jwks_file or self.jwks_uri):
            raise ValueError("asymmetric algorithms need jwks_file or jwks_uri")
        if self.jwks_file and self.jwks_uri:
            raise ValueError("give jwks_file or jwks_uri, not both")
        return self


class ApiKey(_Strict):
    """An API key by owner name; the key is given as its SHA-256 (hex) or read from an env variable."""

    name: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    key_env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ApiKey:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of sha256 or key_env")
        return self


class ApiKeysConfig(_Strict):
    """API keys accepted in ``header``."""

    header: str = "x-api-key"
    keys: tuple[ApiKey, ...] = ()


class AuthnConfig(_Strict):
    """The whole ``authn.yaml``: JWT issuers, API keys, and the verified-token cache size (entries)."""

    jwt: tuple[JwtIssuer, ...] = ()
    api_keys: ApiKeysConfig | None = None
    token_cache_size: int = Field(default=10_000, ge=0)
