"""The cases file of ``envoykit wasm diff``: one filter configuration and a list of requests.

Shape (YAML)::

    root_id: add_header                 # config.root_id
    configuration: "x-hello: world"     # plugin configuration (string)
    vm_configuration: ""                # VM configuration (string)
    log_level: info                     # the ``wasm`` logger level on both sides
    failure_policy: FAIL_CLOSED         # or FAIL_OPEN, FAIL_RELOAD: what streams get once the VM failed
    reload_backoff_ms: 2                # FAIL_RELOAD's backoff base (2..20 ms here: see below)
    node: {id: sidecar~1, metadata: {team: payments}}   # Envoy's node: xds.node.id, xds.node.metadata.*
    singleton: {root_id: s, configuration: "..."}       # a bootstrap (singleton) extension (file: optional)
    before: {add_request_headers: {x-a: "1"}, buffer: true}  # header_mutation / buffer filters before it
    upstream:                           # default upstream answer
      status: 200
      headers: {content-type: text/plain}
      body: "hello"
    clusters:                           # callout targets: cluster name -> answer
      auth: {status: 200, headers: {x-auth: ok}, body: ""}
      slow: {status: 200, delay_ms: 1200}  # answers late: past the call's timeout, Envoy's 504
    cases:
      - name: plain GET
        request: {method: GET, path: /, headers: {x-a: "1"}, body: ""}
        upstream: {status: 404}         # optional override of the default answer

Headers may be a mapping or a list of ``[name, value]`` pairs (to repeat a name).

With ``FAIL_RELOAD`` Envoy reloads a failed VM on a stream that comes at least the (jittered,
up to 1.5 *) backoff after the last load. Envoy runs the cases a few milliseconds apart. A short
backoff, 2 to 20 ms (``reload_config.backoff``): the host moves its clock by 1.5 * the backoff
before each case, so both reload on the first stream after a failure. A long one, 500 to 10,000
ms: the cases run within it, so a stream soon after a (re)load stays failed, unless the case
waits first (``wait_ms``, at least 1.5 * the backoff to be past it: both sides wait, the host on
its clock)::

    failure_policy: FAIL_RELOAD
    reload_backoff_ms: 1000
    cases:
      - {name: the panic, wait_ms: 1600, request: {headers: {x-panic: "1"}}}
      - {name: reloaded, request: {path: /b}}   # more than the backoff since start-up

A network (TCP) filter is checked with ``protocol: tcp``; each case is one connection to an echo
upstream through ``tcp_proxy``, sending ``messages`` one by one (each waits for its echo), then
closing::

    protocol: tcp
    root_id: tcp_inspect
    cases:
      - {name: one line, messages: ["hello\n"]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from envoykit.wasmhost.abi import LogLevel
from envoykit.wasmhost.exchange import HttpRequest, HttpResponse


class CasesError(ValueError):
    """The cases file is unusable; the message names the file and the field."""


@dataclass
class Case:
    """One request to send with the upstream answer for it (HTTP), or messages to send (TCP)."""

    name: str
    request: HttpRequest
    upstream: HttpResponse
    messages: list[bytes] = field(default_factory=list)
    wait_ms: int = 0  # time passing before the case (both sides; the host on its clock)


@dataclass
class Singleton:
    """A bootstrap (singleton) Wasm extension: ``bootstrap_extensions`` ``envoy.bootstrap.wasm``
    with ``singleton: true`` in Envoy, a second plugin in the same host here (shared data and
    queues are shared by VM id). ``file`` is the module (default: the filter's own)."""

    root_id: str = ""
    configuration: str = ""
    file: Path | None = None


@dataclass
class CaseFile:
    """A validated cases file."""

    protocol: str = "http"
    root_id: str = ""
    configuration: str = ""
    vm_configuration: str = ""
    vm_id: str = "envoykit"
    name: str = "envoykit_wasm"
    log_level: LogLevel = LogLevel.INFO
    failure_policy: str = "FAIL_CLOSED"
    reload_backoff_ms: int = 2
    node: dict[str, Any] = field(default_factory=dict)
    singleton: Singleton | None = None
    before_headers: list[tuple[str, str]] = field(default_factory=list)
    before_buffer: bool = False  # an envoy.filters.http.buffer filter before the Wasm one
    clusters: dict[str, HttpResponse] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)


_LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4, "critical": 5}


def _headers(value: Any, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [(str(k).lower(), str(v)) for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        return [(str(k).lower(), str(v)) for k, v in value]
    raise CasesError(f"{where}: headers must be a mapping or a list of [name, value] pairs")


def _body(value: Any, where: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    raise CasesError(f"{where}: body must be a string")


def _response(value: Any, where: str, *, callout: bool = False) -> HttpResponse:
    if not isinstance(value, dict):
        raise CasesError(f"{where}: expected a mapping with status, headers, body")
    unknown = set(value) - {"status", "headers", "body", *(("delay_ms",) if callout else ())}
    if unknown:
        raise CasesError(f"{where}: unknown field(s) {sorted(unknown)}")
    status = value.get("status", 200)
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise CasesError(f"{where}.status: must be an HTTP status 100..599, got {status!r}")
    delay = value.get("delay_ms", 0)
    if not isinstance(delay, int) or not 0 <= delay <= 10_000:
        raise CasesError(f"{where}.delay_ms: milliseconds 0..10000, got {delay!r}")
    headers = _headers(value.get("headers"), f"{where}.headers")
    return HttpResponse(status, headers, _body(value.get("body"), where), delay)


def _request(value: Any, where: str) -> HttpRequest:
    if not isinstance(value, dict):
        raise CasesError(f"{where}: expected a mapping with method, path, headers, body")
    unknown = set(value) - {"method", "path", "authority", "headers", "body"}
    if unknown:
        raise CasesError(f"{where}: unknown field(s) {sorted(unknown)}")
    path = str(value.get("path", "/"))
    if not path.startswith("/"):
        raise CasesError(f"{where}.path: must start with '/', got {path!r}")
    return HttpRequest(
        method=str(value.get("method", "GET")).upper(),
        path=path,
        authority=str(value.get("authority", "example.com")),
        headers=_headers(value.get("headers"), f"{where}.headers"),
        body=_body(value.get("body"), where),
    )


def parse_cases(doc: Any, source: str = "<cases>") -> CaseFile:
    """Validate a parsed cases document.

    Raises:
        CasesError: a missing or malformed field (the message names ``source`` and the field path).
    """
    if not isinstance(doc, dict):
        raise CasesError(f"{source}: the document must be a mapping")
    known = {
        "protocol", "root_id", "configuration", "vm_configuration", "vm_id", "name", "log_level",
        "upstream", "clusters", "cases", "failure_policy", "reload_backoff_ms", "node", "singleton", "before",
    }  # fmt: skip
    unknown = set(doc) - known
    if unknown:
        raise CasesError(f"{source}: unknown field(s) {sorted(unknown)}")
    level = str(doc.get("log_level", "info")).lower()
    if level not in _LEVELS:
        raise CasesError(f"{source}: log_level: one of {sorted(_LEVELS)}, got {level!r}")
    default_up = _response(doc.get("upstream", {}), f"{source}: upstream")
    clusters_doc = doc.get("clusters") or {}
    if not isinstance(clusters_doc, dict):
        raise CasesError(f"{source}: clusters: expected a mapping of cluster name to answer")
    policy = str(doc.get("failure_policy", "FAIL_CLOSED"))
    if policy not in ("FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"):
        raise CasesError(f"{source}: failure_policy: FAIL_CLOSED, FAIL_OPEN or FAIL_RELOAD, got {policy!r}")
    backoff = doc.get("reload_backoff_ms", 2)
    if not isinstance(backoff, int) or isinstance(backoff, bool) or not _backoff_ok(backoff):
        raise CasesError(f"{source}: reload_backoff_ms: milliseconds 2..20 or 500..10000, got {backoff!r}")
    protocol = str(doc.get("protocol", "http"))
    if protocol not in ("http", "tcp"):
        raise CasesError(f"{source}: protocol: 'http' or 'tcp', got {protocol!r}")
    before = _before(doc.get("before"), f"{source}: before")
    out = CaseFile(
        protocol=protocol,
        root_id=str(doc.get("root_id", "")),
        configuration=str(doc.get("configuration", "")),
        vm_configuration=str(doc.get("vm_configuration", "")),
        vm_id=str(doc.get("vm_id", "envoykit")),
        name=str(doc.get("name", "envoykit_wasm")),
        log_level=LogLevel(_LEVELS[level]),
        failure_policy=policy,
        reload_backoff_ms=backoff,
        node=_node(doc.get("node"), f"{source}: node"),
        singleton=_singleton(doc.get("singleton"), f"{source}: singleton", Path(source).parent),
        before_headers=before[0],
        before_buffer=before[1],
        clusters={
            str(k): _response(v, f"{source}: clusters.{k}", callout=True) for k, v in clusters_doc.items()
        },
    )
    cases = doc.get("cases")
    if not isinstance(cases, list) or not cases:
        raise CasesError(f"{source}: cases: expected a non-empty list")
    for i, item in enumerate(cases):
        where = f"{source}: cases.{i}"
        if not isinstance(item, dict):
            raise CasesError(f"{where}: expected a mapping with name, request, upstream")
        if protocol == "tcp":
            out.cases.append(_tcp_case(item, i, where))
            continue
        extra = set(item) - {"name", "request", "upstream", "wait_ms"}
        if extra:
            raise CasesError(f"{where}: unknown field(s) {sorted(extra)}")
        up = _response(item["upstream"], f"{where}.upstream") if "upstream" in item else default_up
        out.cases.append(
            Case(
                str(item.get("name", f"case {i}")),
                _request(item.get("request", {}), f"{where}.request"),
                up,
                wait_ms=_wait(item.get("wait_ms", 0), f"{where}.wait_ms"),
            )
        )
    return out


def _backoff_ok(ms: int) -> bool:
    """A short backoff (every case past it) or a long one (cases within it unless they wait)."""
    return 2 <= ms <= 20 or 500 <= ms <= 10_000


def _wait(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 30_000:
        raise CasesError(f"{where}: milliseconds 0..30000, got {value!r}")
    return value


def _node(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"id", "metadata"}:
        raise CasesError(f"{where}: expected a mapping with id and metadata")
    metadata = value.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CasesError(f"{where}.metadata: expected a mapping")
    return {"id": str(value.get("id", "")), "metadata": metadata}


def _singleton(value: Any, where: str, base: Path) -> Singleton | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"root_id", "configuration", "file"}:
        raise CasesError(f"{where}: expected a mapping with root_id, configuration and file")
    file = value.get("file")
    return Singleton(
        root_id=str(value.get("root_id", "")),
        configuration=str(value.get("configuration", "")),
        file=(base / str(file)).resolve() if file else None,
    )


def _before(value: Any, where: str) -> tuple[list[tuple[str, str]], bool]:
    """``before:`` filters ahead of the Wasm one: ``add_request_headers`` (a header_mutation
    filter) and ``buffer: true`` (a buffer filter: the whole request body in one data callback)."""
    if value is None:
        return [], False
    if not isinstance(value, dict) or set(value) - {"add_request_headers", "buffer"}:
        raise CasesError(f"{where}: expected a mapping with add_request_headers and/or buffer")
    buffer = value.get("buffer", False)
    if not isinstance(buffer, bool):
        raise CasesError(f"{where}.buffer: true or false, got {buffer!r}")
    return _headers(value.get("add_request_headers"), f"{where}.add_request_headers"), buffer


def _tcp_case(item: dict[str, Any], i: int, where: str) -> Case:
    extra = set(item) - {"name", "messages", "wait_ms"}
    if extra:
        raise CasesError(
            f"{where}: unknown field(s) {sorted(extra)} (a tcp case has name, messages and wait_ms)"
        )
    messages = item.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, str) and m for m in messages):
        raise CasesError(f"{where}.messages: expected a non-empty list of non-empty strings")
    return Case(
        str(item.get("name", f"case {i}")),
        HttpRequest(),
        HttpResponse(),
        [m.encode() for m in messages],
        wait_ms=_wait(item.get("wait_ms", 0), f"{where}.wait_ms"),
    )


def load_cases(path: str | Path) -> CaseFile:
    """Read and validate a cases YAML file.

    Raises:
        CasesError: unreadable file, bad YAML, or a malformed field.
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise CasesError(f"{p}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CasesError(f"{p}: invalid YAML: {exc}") from exc
    return parse_cases(doc, str(p))
