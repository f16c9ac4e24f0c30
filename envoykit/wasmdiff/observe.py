"""What one case produced, on either side, in a form both sides share and can be compared."""

from __future__ import annotations

from dataclasses import dataclass, field

# Headers Envoy itself owns on the way to the client or the upstream (not the filter's doing).
CLIENT_IGNORED = frozenset({"date", "server", "connection", "transfer-encoding"})
UPSTREAM_IGNORED = frozenset({"connection", "transfer-encoding"})
# Headers whose value is a measured time: compared for presence, not value.
TIMING = frozenset({"x-envoy-upstream-service-time", "x-envoy-expected-rq-timeout-ms"})


def _untimed(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k, "<time>" if k in TIMING else v) for k, v in headers)


@dataclass
class Observation:
    """One case as seen from outside the filter.

    Attributes:
        status: status code the client got (0: reset or no answer).
        headers: response headers the client got, minus :data:`CLIENT_IGNORED`.
        body: response body the client got.
        upstream: (method, path, headers, body) that reached the upstream, or ``None``.
        logs: (level name, message) the filter logged while the case ran.
        upstream_cut: (host side) the filter stopped the request after its headers went
            upstream; what the upstream saw then depends on Envoy's connection pool (a pooled
            connection sends the headers at once, a new one is still connecting), so
            :func:`differences` does not compare the upstream view of such a case.
    """

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    upstream: tuple[str, str, list[tuple[str, str]], bytes] | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)
    upstream_cut: bool = False


LEVEL_NAMES = ("trace", "debug", "info", "warning", "error", "critical")


def differences(host: Observation, envoy: Observation) -> list[str]:
    """Human-readable differences between the host's and Envoy's observation (empty: identical).

    Headers are compared as sorted multisets (Envoy's own header order can differ from the
    wire order), timing headers (:data:`TIMING`) by presence only; logs in order, exactly.
    """
    out: list[str] = []
    if host.status != envoy.status:
        out.append(f"status: host {host.status} != envoy {envoy.status}")
    if _untimed(host.headers) != _untimed(envoy.headers):
        out.append(f"response headers: host {sorted(host.headers)} != envoy {sorted(envoy.headers)}")
    if host.body != envoy.body:
        out.append(f"response body: host {host.body[:200]!r} != envoy {envoy.body[:200]!r}")
    if host.upstream_cut:
        pass  # not determined by the filter (see Observation.upstream_cut)
    elif (host.upstream is None) != (envoy.upstream is None):
        out.append(
            f"upstream reached: host {host.upstream is not None} != envoy {envoy.upstream is not None}"
        )
    elif host.upstream is not None and envoy.upstream is not None:
        hm, hp, hh, hb = host.upstream
        em, ep, eh, eb = envoy.upstream
        if (hm, hp) != (em, ep):
            out.append(f"upstream request line: host {hm} {hp} != envoy {em} {ep}")
        if _untimed(hh) != _untimed(eh):
            out.append(f"upstream headers: host {sorted(hh)} != envoy {sorted(eh)}")
        if hb != eb:
            out.append(f"upstream body: host {hb[:200]!r} != envoy {eb[:200]!r}")
    if host.logs != envoy.logs:
        out.append(f"logs: host {host.logs} != envoy {envoy.logs}")
    return out
