"""JWT verification per configured issuer (RS256/ES256/EdDSA/HS256), with cached JWKS.

Rules never see an unverified token: a token that is present but fails any check makes the request
unauthenticated and the server answers 401 (as Istio's RequestAuthentication does), whatever the rules.

* ``alg: none`` is always refused, as is any algorithm not listed for the issuer.
* ``iss`` selects the issuer; ``aud`` must contain one of the issuer's ``audiences`` (when set);
  ``exp`` (required by default) and ``nbf`` are checked with ``leeway_s`` of clock skew.
* Keys come from a JWKS file or URL. They are fetched when the configuration loads (never cold on the
  request path: Envoy's ext_authz timeout defaults to 200 ms) and again in the background when a token
  names an unknown ``kid`` (at most once per ``jwks_min_refresh_s``); a request waits at most
  ``jwks_refresh_wait_ms`` for that refresh.
* Verified tokens are cached until they expire (bounded LRU), so a repeated token costs one dict lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from envoykit.authz.authn_config import ApiKeysConfig, AuthnConfig, JwtIssuer
from envoykit.core.logs import get_logger

log = get_logger("authz")

ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class TokenError(Exception):
    """A token was presented and failed verification; ``str()`` says why (safe to log, not secret)."""


class JwksSource:
    """The keys of one issuer, from a file or a URL, refreshed on unknown ``kid``.

    Args:
        issuer: the issuer's config (``jwks_file`` or ``jwks_uri``).
        base_dir: resolves a relative ``jwks_file``.
        clock: returns seconds (monotonic), injectable for tests.
    """

    def __init__(
        self, issuer: JwtIssuer, base_dir: Path, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.issuer = issuer
        self.base_dir = base_dir
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._unnamed: list[PyJWK] = []
        self._last_refresh = -1e18
        self._lock = threading.Lock()
        self._refreshing: threading.Thread | None = None
        self.last_error: str | None = None

    def _fetch(self) -> dict[str, Any]:
        if self.issuer.jwks_file:
            path = self.base_dir / self.issuer.jwks_file
            return dict(json.loads(path.read_text()))
        assert self.issuer.jwks_uri is not None
        r = httpx.get(self.issuer.jwks_uri, timeout=self.issuer.jwks_fetch_timeout_s)
        r.raise_for_status()
        return dict(r.json())

    def refresh(self) -> bool:
        """Fetch the JWKS now; on failure keep the old keys. Returns True when keys were replaced."""
        self._last_refresh = self._clock()
        try:
            doc = self._fetch()
            keys: dict[str, PyJWK] = {}
            unnamed: list[PyJWK] = []
            for k in doc.get("keys", []):
                try:
                    jwk = PyJWK.from_dict(k)
                except Exception as exc:  # one bad key must not drop the others
                    log.warning(
                        "jwks key skipped", issuer=self.issuer.issuer, kid=k.get("kid"), error=str(exc)
                    )
                    continue
                if k.get("kid"):
                    keys[k["kid"]] = jwk
                else:
                    unnamed.append(jwk)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "jwks fetch failed, keeping previous keys", issuer=self.issuer.issuer, error=self.last_error
            )
            return False
        with self._lock:
            self._keys, self._unnamed = keys, unnamed
        self.last_error = None
        log.info("jwks loaded", issuer=self.issuer.issuer, keys=len(keys) + len(unnamed))
        return True

    def key_for(self, kid: str | None) -> PyJWK | None:
        """The key for ``kid``; on a miss, refresh (rate-limited) and wait a bounded time for it."""
        with self._lock:
            if kid is None:
                candidates = self._unnamed or list(self._keys.values())
                if len(candidates) == 1:
                    return candidates[0]
                return None
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._clock() - self._last_refresh >= self.issuer.jwks_min_refresh_s:
            self._start_refresh()
        t = self._refreshing
        if t is not None:
            t.join(self.issuer.jwks_refresh_wait_ms / 1000)
        with self._lock:
            return self._keys.get(kid)

    def _start_refresh(self) -> None:
        if self._refreshing is not None and self._refreshing.is_alive():
            return
        self._last_refresh = self._clock()
        self._refreshing = threading.Thread(target=self.refresh, daemon=True, name="jwks-refresh")
        self._refreshing.start()


class Authenticator:
    """Verifies JWTs and API keys of a request according to an :class:`AuthnConfig`.

    Args:
        config: the validated ``authn.yaml``.
        base_dir: directory of ``authn.yaml`` (relative ``jwks_file`` paths).
        previous: the authenticator being replaced on reload; JWKS already fetched for an unchanged
            issuer are reused instead of fetched again.
        now: wall clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        config: AuthnConfig,
        base_dir: Path,
        previous: Authenticator | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._now = now
        self._issuers: dict[str, tuple[JwtIssuer, JwksSource | None, bytes | None]] = {}
        for iss in config.jwt:
            source: JwksSource | None = None
            secret: bytes | None = None
            if iss.hs256_secret_env:
                secret = os.environ.get(iss.hs256_secret_env, "").encode()
            elif iss.hs256_secret is not None:
                secret = iss.hs256_secret.encode()
            if iss.jwks_file or iss.jwks_uri:
                old = previous._issuers.get(iss.issuer) if previous else None
                if old and old[1] is not None and old[0] == iss:
                    source = old[1]
                else:
                    source = JwksSource(iss, base_dir)
                    source.refresh()
            self._issuers[iss.issuer] = (iss, source, secret)
        self._cache: OrderedDict[str, tuple[dict[str, Any], float, JwtIssuer]] = OrderedDict()
        self._api_keys: dict[bytes, str] = {}
        if config.api_keys is not None:
            self._api_keys = _api_key_table(config.api_keys)

    def extract_token(self, headers: Any, cookie: Callable[[str], str | None]) -> str | None:
        """Find a bearer token using every issuer's ``from_headers`` / ``from_cookies`` settings."""
        for iss, _, _ in self._issuers.values():
            for src in iss.from_headers:
                value = headers.get(src.name)
                if value is None:
                    continue
                if src.prefix:
                    if value[: len(src.prefix)].lower() != src.prefix.lower():
                        continue
                    value = value[len(src.prefix) :]
                value = value.strip()
                if value:
                    return str(value)
            for name in iss.from_cookies:
                value = cookie(name)
                if value:
                    return value
        return None

    def verify(self, token: str) -> tuple[dict[str, Any], JwtIssuer]:
        """Verify ``token``; return ``(claims, issuer)``.

        Raises:
            TokenError: malformed, ``alg: none`` or an algorithm the issuer does not allow, unknown
                issuer or key, bad signature, expired, not yet valid, wrong audience.
        """
        now = self._now()
        hit = self._cache.get(token)
        if hit is not None:
            claims, exp, iss = hit
            if now <= exp + iss.leeway_s and now + iss.leeway_s >= claims.get("nbf", 0):
                self._cache.move_to_end(token)
                return claims, iss
            self._cache.pop(token, None)
        claims, iss = self._verify_uncached(token, now)
        self._cache[token] = (claims, float(claims.get("exp", now + 300)), iss)
        if len(self._cache) > self.config.token_cache_size:
            self._cache.popitem(last=False)
        return claims, iss

    def _verify_uncached(self, token: str, now: float) -> tuple[dict[str, Any], JwtIssuer]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            # The decoder's words (base64 padding, JSON errors) go to the debug log, not to the caller.
            log.debug("malformed token", error=str(exc))
            raise TokenError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenError("alg 'none' is never accepted")
        iss_name = unverified.get("iss")
        entry = self._issuers.get(iss_name) if isinstance(iss_name, str) else None
        if entry is None:
            raise TokenError(f"unknown issuer {iss_name!r}")
        iss, source, secret = entry
        if alg not in iss.algorithms:
            raise TokenError(f"algorithm {alg} not allowed for issuer {iss.issuer}")
        key: Any
        if alg.startswith("HS"):
            if not secret:
                raise TokenError(f"issuer {iss.issuer} has no HMAC secret")
            key = secret
        else:
            if source is None:
                raise TokenError(f"issuer {iss.issuer} has no JWKS")
            jwk = source.key_for(header.get("kid"))
            if jwk is None:
                raise TokenError(f"no key {header.get('kid')!r} in the JWKS of {iss.issuer}")
            key = jwk.key
        options: dict[str, Any] = {
            "require": ["exp"] if iss.require_exp else [],
            "verify_aud": bool(iss.audiences),
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=iss.audiences or None,
                issuer=iss.issuer,
                leeway=iss.leeway_s,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"{type(exc).__name__}: {exc}") from None
        return dict(claims), iss

    def api_key_name(self, headers: Any) -> str | None:
        """The configured name of the API key presented in the configured header, or None."""
        cfg = self.config.api_keys
        if cfg is None:
            return None
        value = headers.get(cfg.header)
        if not value:
            return None
        digest = hashlib.sha256(value.encode()).digest()
        for known, name in self._api_keys.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def jwks_errors(self) -> dict[str, str]:
        """Issuer → last JWKS fetch error, for issuers whose keys could not be fetched."""
        return {n: s.last_error for n, (_, s, _) in self._issuers.items() if s is not None and s.last_error}


def _api_key_table(cfg: ApiKeysConfig) -> dict[bytes, str]:
    table: dict[bytes, str] = {}
    for k in cfg.keys:
        if k.sha256:
            table[bytes.fromhex(k.sha256)] = k.name
        elif k.key_env:
            raw = os.environ.get(k.key_env)
            if raw:
                table[hashlib.sha256(raw.encode()).digest()] = k.name
    return table
