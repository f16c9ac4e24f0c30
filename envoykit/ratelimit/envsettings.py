"""envoyproxy/ratelimit's environment variables, read as ``envoykit ratelimit serve`` options.

A drop-in for that service has to take the deployment as it is: its settings come from the
environment (``src/settings/settings.go`` of envoyproxy/ratelimit). :func:`from_environ` maps every
variable with an envoykit meaning onto the option of the same meaning; command-line flags win over
them (the CLI applies a value only to options left at their default). A variable whose meaning
envoykit does not have is refused, naming it and what to do, rather than silently ignored: a
deployment that asks for statsd or Sentinel must not start believing it got them.

Values that ask for what envoykit does anyway (``USE_STATSD=false``, ``LOG_FORMAT=json``,
``BACKEND_TYPE=redis`` with a ``REDIS_URL``, ``CONFIG_TYPE=FILE``, ...) are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from envoykit.core.errors import ConfigError

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off", ""}


@dataclass
class EnvSettings:
    """Option values taken from the environment.

    Attributes:
        values: ``serve`` option name → value (e.g. ``redis_url`` → ``redis://host:6379``).
        sources: option name → the variable(s) it came from, for the startup log.
    """

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def set(self, option: str, value: Any, source: str) -> None:
        self.values[option] = value
        self.sources[option] = source


def _bool(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_s(name: str, raw: str) -> float:
    """A Go ``time.Duration`` string (``500ms``, ``1m30s``) in seconds.

    Raises:
        ValueError: not a duration.
    """
    text = raw.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{name}={raw!r}: expected a Go duration such as 500ms or 10s")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


# Refused variables: name → what to do instead. Only refused when set to a value that asks for
# something (see _ACCEPTED for the values that match envoykit's behaviour).
_REFUSED = {
    "STATSD_HOST": "envoykit exports Prometheus metrics on --metrics-port, not statsd",
    "STATSD_PORT": "envoykit exports Prometheus metrics on --metrics-port, not statsd",
    "EXTRA_TAGS": "envoykit's metrics carry domain and key labels; extra tags are not supported",
    "USE_DOG_STATSD": "envoykit exports Prometheus metrics on --metrics-port, not DogStatsD",
    "PROMETHEUS_MAPPER_YAML": "envoykit names its metrics itself; use --metric-names ratelimit",
    "HOST": "the HTTP port (/healthcheck, /metrics) listens on the gRPC host: set GRPC_HOST",
    "DEBUG_HOST": "the HTTP port (/healthcheck, /metrics) listens on the gRPC host: set GRPC_HOST",
    "REDIS_PERSECOND": "a second Redis for per-second limits is not supported; one store holds all",
    "REDIS_PERSECOND_URL": "a second Redis for per-second limits is not supported",
    "REDIS_TLS_CLIENT_CERT": "Redis client certificates are not supported; use REDIS_TLS with a "
    "server certificate the system trusts",
    "REDIS_TLS_CLIENT_KEY": "Redis client certificates are not supported",
    "REDIS_TLS_CACERT": "a custom Redis CA is not supported; the system trust store is used",
    "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION": "envoykit always verifies the Redis server's name",
    "REDIS_PIPELINE_WINDOW": "envoykit sends each request's hits in one script call; no pipelining",
    "REDIS_PIPELINE_LIMIT": "envoykit sends each request's hits in one script call; no pipelining",
    "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION": "not supported; a failed call answers UNAVAILABLE",
    "MEMCACHE_HOST_PORT": "memcached is not a supported store; use REDIS_URL",
    "MEMCACHE_SRV": "memcached is not a supported store; use REDIS_URL",
    "LOCAL_CACHE_SIZE_IN_BYTES": "no local over-limit cache; every call asks the store",
    "EXPIRATION_JITTER_MAX_SECONDS": "counter TTLs are exact; no jitter",
    "TRACING_ENABLED": "tracing is not supported",
    "GRPC_SERVER_USE_TLS": "the gRPC server speaks plaintext; terminate TLS in Envoy",
    "GRPC_MAX_CONNECTION_AGE": "not supported",
    "GRPC_MAX_CONNECTION_AGE_GRACE": "not supported",
    "CONFIG_GRPC_XDS_SERVER_URL": "config comes from files (--config-dir), not xDS",
    "RUNTIME_APPDIRECTORY": None,  # read below
}
# name → values (lower case) that ask for what envoykit does anyway
_ACCEPTED = {
    "USE_STATSD": {"false", "0", "f", "no", "off"},
    "USE_DOG_STATSD": {"false", "0", "f", "no", "off"},
    "TRACING_ENABLED": {"false", "0", "f", "no", "off"},
    "GRPC_SERVER_USE_TLS": {"false", "0", "f", "no", "off"},
    "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION": {"false", "0", "f", "no", "off"},
    "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION": {"false", "0", "f", "no", "off"},
    "LOCAL_CACHE_SIZE_IN_BYTES": {"0"},
    "EXPIRATION_JITTER_MAX_SECONDS": {"0"},
    "REDIS_PIPELINE_WINDOW": {"0", "0s"},
    "REDIS_PIPELINE_LIMIT": {"0"},
    "LOG_FORMAT": {"json"},
    "CONFIG_TYPE": {"file"},
    "BACKEND_TYPE": {"redis"},
    "RUNTIME_WATCH_ROOT": {"true", "1", "t", "yes", "on"},
    "RUNTIME_IGNOREDOTFILES": {"true", "1", "t", "yes", "on"},
    "PROMETHEUS_PATH": {"/metrics"},
}
_ACCEPTED_WHY = {
    "USE_STATSD": "envoykit exports Prometheus metrics on --metrics-port, not statsd: set USE_STATSD=false",
    "LOG_FORMAT": "envoykit logs JSON lines only: set LOG_FORMAT=json or unset it",
    "CONFIG_TYPE": "config comes from files (--config-dir or RUNTIME_ROOT), not xDS",
    "BACKEND_TYPE": "only Redis (or memory, without REDIS_URL) is supported",
    "RUNTIME_WATCH_ROOT": "envoykit always watches the config directory itself",
    "RUNTIME_IGNOREDOTFILES": "envoykit always skips dot files in the config directory",
    "PROMETHEUS_PATH": "metrics are served on /metrics",
}
_LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "error",
    "panic": "error",
}


def _redis(env: Mapping[str, str], out: EnvSettings) -> None:
    raw = env.get("REDIS_URL", "").strip()
    kind = env.get("REDIS_TYPE", "SINGLE").strip().lower() or "single"
    if kind not in ("single", "cluster"):
        raise ValueError(
            f"REDIS_TYPE={env['REDIS_TYPE']!r}: only SINGLE and CLUSTER are supported (no Sentinel)"
        )
    if not raw:
        return
    socket = env.get("REDIS_SOCKET_TYPE", "tcp").strip().lower() or "tcp"
    tls = _bool("REDIS_TLS", env.get("REDIS_TLS", "false"))
    auth = env.get("REDIS_AUTH", "")
    userinfo = ""
    if auth:
        user, sep, password = auth.partition(":")
        userinfo = (
            f"{quote(user, safe='')}:{quote(password, safe='')}" if sep else f":{quote(auth, safe='')}"
        ) + "@"
    names = "REDIS_URL" + (", REDIS_AUTH" if auth else "") + (", REDIS_TLS" if tls else "")
    if "://" in raw:
        url = raw  # already a URL: taken as is
    elif socket == "unix":
        if tls:
            raise ValueError(
                "REDIS_TLS=true with REDIS_SOCKET_TYPE=unix: TLS over a unix socket is not supported"
            )
        url = f"unix://{userinfo}{raw}"
    elif socket == "tcp":
        first = raw.split(",")[0].strip()  # a cluster's node list: any node finds the others
        url = f"{'rediss' if tls else 'redis'}://{userinfo}{first}"
    else:
        raise ValueError(f"REDIS_SOCKET_TYPE={socket!r}: expected tcp or unix")
    if kind == "cluster":
        out.set("redis_cluster_url", url, names + ", REDIS_TYPE")
    else:
        out.set("redis_url", url, names)
    if env.get("REDIS_POOL_SIZE"):
        out.set("redis_pool_size", _int("REDIS_POOL_SIZE", env["REDIS_POOL_SIZE"]), "REDIS_POOL_SIZE")
    if env.get("REDIS_TIMEOUT"):
        ms = round(go_duration_s("REDIS_TIMEOUT", env["REDIS_TIMEOUT"]) * 1000)
        out.set("store_timeout_ms", ms, "REDIS_TIMEOUT")


def _runtime(env: Mapping[str, str], out: EnvSettings) -> None:
    root = env.get("RUNTIME_ROOT")
    if not root:
        if env.get("RUNTIME_SUBDIRECTORY"):
            raise ValueError("RUNTIME_SUBDIRECTORY needs RUNTIME_ROOT")
        return
    # the reference reads <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/<RUNTIME_APPDIRECTORY (config)>/*.yaml
    path = Path(root) / env.get("RUNTIME_SUBDIRECTORY", "") / (env.get("RUNTIME_APPDIRECTORY") or "config")
    out.set("config_dir", path, "RUNTIME_ROOT, RUNTIME_SUBDIRECTORY, RUNTIME_APPDIRECTORY")


def _server(env: Mapping[str, str], out: EnvSettings) -> None:
    if env.get("GRPC_PORT") or env.get("GRPC_HOST"):
        host = env.get("GRPC_HOST") or "127.0.0.1"
        port = _int("GRPC_PORT", env.get("GRPC_PORT") or "8081")
        out.set("address", f"{host}:{port}", "GRPC_HOST, GRPC_PORT")
    # The reference has three HTTP ports: PORT (/healthcheck, /json), PROMETHEUS_ADDR (/metrics) and
    # DEBUG_PORT (/stats, pprof). envoykit serves /healthcheck, /healthz, /readyz and /metrics on one
    # port (--metrics-port), so they map there; set to different ports they cannot all be honoured.
    ports: dict[str, int] = {}
    if env.get("PORT"):
        ports["PORT"] = _int("PORT", env["PORT"])
    if _bool("USE_PROMETHEUS", env.get("USE_PROMETHEUS", "false")):
        addr = env.get("PROMETHEUS_ADDR", ":9090")
        ports["PROMETHEUS_ADDR"] = _int("PROMETHEUS_ADDR", addr.rpartition(":")[2])
    if env.get("DEBUG_PORT"):
        ports["DEBUG_PORT"] = _int("DEBUG_PORT", env["DEBUG_PORT"])
    if len(set(ports.values())) > 1:
        given = ", ".join(f"{k}={v}" for k, v in ports.items())
        raise ValueError(
            f"{given}: envoykit serves /healthcheck and /metrics on one port (--metrics-port); "
            "give these the same port, or pass --metrics-port"
        )
    if ports:
        out.set("metrics_port", next(iter(ports.values())), ", ".join(ports))
    if env.get("LOG_LEVEL"):
        level = _LOG_LEVELS.get(env["LOG_LEVEL"].strip().lower())
        if level is None:
            raise ValueError(f"LOG_LEVEL={env['LOG_LEVEL']!r}: expected debug, info, warn or error")
        out.set("log_level", level, "LOG_LEVEL")


_FLAGS = {
    "SHADOW_MODE": "shadow_mode",
    "GLOBAL_QUOTA_MODE": "quota_mode",
    "LIMIT_RESPONSE_HEADERS_ENABLED": "response_headers",
    "RESPONSE_DYNAMIC_METADATA": "response_dynamic_metadata",
    "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "stop_when_over_limit",
    "MERGE_DOMAIN_CONFIG": "merge_domains",
}


def _service(env: Mapping[str, str], out: EnvSettings) -> None:
    for name, option in _FLAGS.items():
        if env.get(name):
            out.set(option, _bool(name, env[name]), name)
    if env.get("NEAR_LIMIT_RATIO"):
        try:
            out.set("near_limit_ratio", float(env["NEAR_LIMIT_RATIO"]), "NEAR_LIMIT_RATIO")
        except ValueError:
            raise ValueError(f"NEAR_LIMIT_RATIO={env['NEAR_LIMIT_RATIO']!r}: expected a number") from None
    if "CACHE_KEY_PREFIX" in env:
        out.set("cache_key_prefix", env["CACHE_KEY_PREFIX"], "CACHE_KEY_PREFIX")
    names = ("LIMIT_LIMIT_HEADER", "LIMIT_REMAINING_HEADER", "LIMIT_RESET_HEADER")
    if any(env.get(n) for n in names):
        defaults = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
        headers = tuple(env.get(n) or d for n, d in zip(names, defaults, strict=True))
        out.set("header_names", headers, ", ".join(names))


def from_environ(env: Mapping[str, str], flags: frozenset[str] = frozenset()) -> EnvSettings:
    """Read envoyproxy/ratelimit's variables from ``env``.

    ``flags``: options given on the command line; their variables are neither read nor refused
    (the flag wins), e.g. ``metrics_port`` leaves PORT, PROMETHEUS_ADDR and DEBUG_PORT alone.

    Raises:
        ConfigError: one or more variables cannot be honoured; the message lists each with its
            reason (every problem at once, so a deployment is fixed in one go).
    """
    out = EnvSettings()
    problems: list[str] = []
    for name, why in _REFUSED.items():
        if why is None or name not in env:
            continue
        if env[name].strip().lower() in _ACCEPTED.get(name, set()):
            continue
        problems.append(f"{name}={env[name]!r}: {why}")
    for name, ok in _ACCEPTED.items():
        if name in _REFUSED or name not in env or env[name].strip().lower() in ok:
            continue
        if name == "BACKEND_TYPE" and env[name].strip().lower() == "memcache":
            problems.append(f"{name}={env[name]!r}: memcached is not a supported store; use REDIS_URL")
            continue
        problems.append(f"{name}={env[name]!r}: {_ACCEPTED_WHY.get(name, 'not supported')}")
    if "metrics_port" in flags:
        skip = ("PORT", "USE_PROMETHEUS", "PROMETHEUS_ADDR", "DEBUG_PORT")
        env = {k: v for k, v in env.items() if k not in skip}
    for step in (_redis, _runtime, _server, _service):
        try:
            step(env, out)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(
            "envoyproxy/ratelimit settings in the environment that envoykit cannot honour "
            "(unset them, or pass --no-env to ignore the environment):\n  " + "\n  ".join(problems)
        )
    return out
