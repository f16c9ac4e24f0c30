"""The typed view of one ``envoy.service.auth.v3.CheckRequest`` that rules read.

Envoy facts this view honours (from the ext_authz filter docs and ``attribute_context.proto``):

* ``attributes.request.http.path`` is the raw request target *including* the query string; the
  ``query`` field stays empty. :attr:`Request.path` is the normalised path every matcher reads
  (:mod:`envoykit.authz.paths`) and :attr:`Request.query` the decoded query parameters.
* ``http.headers`` joins repeated headers with ``,``; when the filter sets ``encode_raw_headers``
  Envoy sends ``header_map`` with each occurrence, which this view prefers so repeated values survive.
* ``source.principal`` is the first URI SAN of the peer certificate, whatever its scheme;
  :attr:`Request.source_spiffe` is set only when it is a well-formed SPIFFE ID.

Everything is computed on first access and cached, so a rule pays only for what it reads.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload
from urllib.parse import parse_qsl

from envoykit.authz.identity import Identity
from envoykit.authz.paths import normalize
from envoykit.core.spiffe import SpiffeId, peer_spiffe_id

_T = TypeVar("_T")


class cached_property(Generic[_T]):  # a drop-in for functools.cached_property
    """Computed on first access, then a plain instance attribute.

    functools' takes a lock on every access before Python 3.12; a Request lives in one thread, and
    these run on every Check.
    """

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> cached_property[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


class Headers(Mapping[str, str]):
    """Request headers with lower-case names; ``h[name]`` is the first value, :meth:`getall` all of them."""

    __slots__ = ("_multi",)

    def __init__(self, multi: dict[str, list[str]]) -> None:
        self._multi = multi

    @classmethod
    def from_pairs(cls, pairs: Iterator[tuple[str, str]] | list[tuple[str, str]]) -> Headers:
        multi: dict[str, list[str]] = {}
        for k, v in pairs:
            k = k.lower()
            values = multi.get(k)
            if values is None:
                multi[k] = [v]
            else:
                values.append(v)
        return cls(multi)

    def __getitem__(self, name: str) -> str:
        return self._multi[name.lower()][0]

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's goes through a KeyError
        """The first value of ``name``, or ``default``."""
        values = self._multi.get(name.lower()) if isinstance(name, str) else None
        return values[0] if values else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._multi

    def __iter__(self) -> Iterator[str]:
        return iter(self._multi)

    def __len__(self) -> int:
        return len(self._multi)

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order (``[]`` when absent)."""
        return list(self._multi.get(name.lower(), ()))

    def __repr__(self) -> str:
        return f"Headers({self._multi!r})"


class Request:
    """What a rule sees of one request (built from a CheckRequest, or directly in tests).

    Attributes (read-only for rules):
        method: HTTP method, upper case (``GET``).
        raw_path: the request target as sent, without the query (``/a/%2e%2e/b``).
        path: the normalised path (:func:`envoykit.authz.paths.normalize_path`): unreserved escapes
            decoded, ``;`` parameters cut off, dot segments resolved, slashes merged.
        path_ambiguity: why the path is ambiguous (requests with one are denied), or None.
        query: decoded query parameters, name → list of values.
        host: the ``:authority`` lower-cased (``api.example.com:8080``); :attr:`hostname` without port.
        headers: :class:`Headers`.
        source_address / source_port: the downstream peer address (the connection's).
        remote_address: the client address as Envoy's RBAC ``remote_ip`` sees it with the HTTP
            connection manager's default ``use_remote_address: false``: the last ``x-forwarded-for``
            entry when it is an IP address, else ``source_address`` (Istio's ``remote.ip``).
        destination_address / destination_port: where the connection arrived (Envoy's listener side).
        destination_labels: ``attributes.destination.labels`` (Envoy's node metadata, see
            :class:`envoykit.authz.istio.Workload`).
        source_principal / destination_principal: URI SAN strings as Envoy sends them.
        source_spiffe / destination_spiffe: :class:`SpiffeId` or ``None``.
        sni, scheme, protocol: TLS and HTTP facts.
        request_id: the ``x-request-id`` header (what upstreams and access logs see), else Envoy's
            ``attributes.request.http.id``.
        context_extensions: the route's ``context_extensions`` map.
        body: request body bytes when Envoy sends it (``with_request_body``), else ``b""``.
        identity: the verified caller identity: the mTLS peer until :meth:`Engine.check
            <envoykit.authz.engine.Engine.check>` sets what authenticated, before any rule runs.
    """

    def __init__(
        self,
        *,
        method: str = "GET",
        path: str = "/",
        host: str = "",
        headers: Headers | Mapping[str, str] | None = None,
        scheme: str = "http",
        protocol: str = "HTTP/1.1",
        source_address: str = "",
        source_port: int = 0,
        source_principal: str = "",
        destination_principal: str = "",
        source_certificate: str = "",
        sni: str = "",
        context_extensions: Mapping[str, str] | None = None,
        body: bytes = b"",
        request_id: str = "",
        destination_address: str = "",
        destination_port: int = 0,
        destination_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.method = method.upper()
        self.target = path
        self.host = host.lower()
        if headers is None:
            headers = Headers({})
        elif not isinstance(headers, Headers):
            headers = Headers.from_pairs(list(headers.items()))
        self.headers: Headers = headers
        self.scheme = scheme
        self.protocol = protocol
        self.source_address = source_address
        self.source_port = source_port
        self.source_principal = source_principal
        self.destination_principal = destination_principal
        self.source_certificate = source_certificate
        self.sni = sni
        self.context_extensions: Mapping[str, str] = context_extensions or {}
        self.body = body
        self.request_id = request_id
        self.destination_address = destination_address
        self.destination_port = destination_port
        self.destination_labels: Mapping[str, str] = destination_labels or {}
        self.identity: Identity = Identity.anonymous(self)

    @classmethod
    def from_check_request(cls, req: Any) -> Request:
        """The view of an ``envoy.service.auth.v3.CheckRequest`` message, each field read on first use.

        A policy reads a few fields of a request; building all of them up front cost more than the
        rules themselves (issue 13). The message must not change while the view is in use.
        """
        return _CheckRequestView(req)

    def _split_path(self) -> None:
        # the three path facts at once: every Check reads the ambiguity and the path
        raw = self.target.partition("?")[0].partition("#")[0]
        d = self.__dict__
        d["raw_path"] = raw
        d["path"], d["path_ambiguity"] = normalize(raw)

    @cached_property
    def raw_path(self) -> str:
        """The request target without ``?query`` and ``#fragment``, not decoded."""
        self._split_path()
        return self.__dict__["raw_path"]  # type: ignore[no-any-return]

    @cached_property
    def path(self) -> str:
        """The normalised path (see :mod:`envoykit.authz.paths`)."""
        self._split_path()
        return self.__dict__["path"]  # type: ignore[no-any-return]

    @cached_property
    def path_ambiguity(self) -> str | None:
        """Why upstreams could read this path differently (``/..;/``, ``%3B``), or None."""
        self._split_path()
        return self.__dict__["path_ambiguity"]  # type: ignore[no-any-return]

    @cached_property
    def raw_query(self) -> str:
        """The query string as sent, without ``?``."""
        q = self.target.split("#", 1)[0]
        return q.split("?", 1)[1] if "?" in q else ""

    @cached_property
    def query(self) -> dict[str, list[str]]:
        """Decoded query parameters: name → values in order (blank values kept)."""
        out: dict[str, list[str]] = {}
        for k, v in parse_qsl(self.raw_query, keep_blank_values=True):
            out.setdefault(k, []).append(v)
        return out

    @cached_property
    def remote_address(self) -> str:
        """The last ``x-forwarded-for`` entry when it is an IP address, else :attr:`source_address`."""
        xff = self.headers.getall("x-forwarded-for")
        if xff:
            last = xff[-1].rsplit(",", 1)[-1].strip()
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass
        return self.source_address

    @cached_property
    def hostname(self) -> str:
        """:attr:`host` without the port (``[::1]:80`` → ``[::1]``)."""
        h = self.host
        if h.startswith("["):
            return h.split("]", 1)[0] + "]"
        return h.rsplit(":", 1)[0] if h.count(":") == 1 else h

    @cached_property
    def source_spiffe(self) -> SpiffeId | None:
        """The peer's SPIFFE ID when ``source_principal`` is one, else ``None``."""
        return peer_spiffe_id(self.source_principal) if self.source_principal else None

    @cached_property
    def destination_spiffe(self) -> SpiffeId | None:
        """This side's SPIFFE ID when ``destination_principal`` is one, else ``None``."""
        return peer_spiffe_id(self.destination_principal) if self.destination_principal else None

    @property
    def mtls(self) -> bool:
        """True when the peer presented a certificate with a URI SAN (mutual TLS)."""
        return bool(self.source_principal)

    def cookie(self, name: str) -> str | None:
        """Value of cookie ``name`` from the ``cookie`` header(s), or ``None``."""
        for header in self.headers.getall("cookie"):
            for part in header.split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
        return None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.host}{self.target} principal={self.source_principal!r}>"


def _headers(http: Any) -> Headers:
    header_map = http.header_map.headers
    if not header_map:
        return Headers({k.lower(): [v] for k, v in http.headers.items()})
    multi: dict[str, list[str]] = {}
    for h in header_map:  # one pass: this runs on every Check whose policy reads a header
        raw = h.raw_value
        v = raw.decode("utf-8", "replace") if raw else h.value
        k = h.key.lower()
        values = multi.get(k)
        if values is None:
            multi[k] = [v]
        else:
            values.append(v)
    return Headers(multi)


class _Field:
    """A view attribute read from the CheckRequest on first access, then a plain instance attribute.

    A class-level descriptor rather than ``__getattr__``: a missed attribute lookup raises and catches
    an AttributeError inside CPython before ``__getattr__`` runs (~0.45 µs per field on the bench
    machine, and a view reads a dozen fields per Check).
    """

    __slots__ = ("name", "read")

    def __init__(self, name: str, read: Callable[[Any, Any], Any]) -> None:
        self.name = name
        self.read = read

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.read(obj._message, obj)
        return value


# How each attribute of a view is read from the CheckRequest (``m``) and the view (``v``).
_FIELDS: dict[str, Callable[[Any, Any], Any]] = {
    "_http": lambda m, v: m.attributes.request.http,
    "method": lambda m, v: v._http.method.upper(),
    "target": lambda m, v: v._http.path,
    "host": lambda m, v: v._http.host.lower(),
    "headers": lambda m, v: _headers(v._http),
    "scheme": lambda m, v: v._http.scheme,
    "protocol": lambda m, v: v._http.protocol,
    "source_address": lambda m, v: m.attributes.source.address.socket_address.address,
    "source_port": lambda m, v: m.attributes.source.address.socket_address.port_value,
    "source_principal": lambda m, v: m.attributes.source.principal,
    "destination_principal": lambda m, v: m.attributes.destination.principal,
    "source_certificate": lambda m, v: m.attributes.source.certificate,
    "sni": lambda m, v: m.attributes.tls_session.sni,
    "context_extensions": lambda m, v: m.attributes.context_extensions,
    "body": lambda m, v: v._http.raw_body or v._http.body.encode(),
    # x-request-id is what the apps and access logs see; http.id is Envoy's stream id
    "request_id": lambda m, v: v.headers.get("x-request-id") or v._http.id,
    "destination_address": lambda m, v: m.attributes.destination.address.socket_address.address,
    "destination_port": lambda m, v: m.attributes.destination.address.socket_address.port_value,
    "destination_labels": lambda m, v: dict(m.attributes.destination.labels),
    "identity": lambda m, v: Identity.anonymous(v),
}


class _CheckRequestView(Request):
    """A :class:`Request` whose attributes are read from a CheckRequest on first access, then kept."""

    def __init__(self, message: Any) -> None:  # no super().__init__(): nothing is read up front
        self._message = message


for _name, _read in _FIELDS.items():
    setattr(_CheckRequestView, _name, _Field(_name, _read))
