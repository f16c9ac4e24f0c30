"""Builders for the mesh's mTLS configuration (protobuf messages), with every secret fetched over SDS/ADS.

Public API::

    inbound_tls_context(trust_domain) -> DownstreamTlsContext      # requires a mesh client certificate
    outbound_tls_context(server_spiffe_id, sni=None) -> UpstreamTlsContext  # verifies the exact server ID
    tls_transport_socket(context) -> TransportSocket              # envoy.transport_sockets.tls
    inbound_filter_chains(filters, trust_domain, mode) -> list[FilterChain]   # STRICT | PERMISSIVE | DISABLE
    inbound_listener_filters(mode) -> list[ListenerFilter]        # tls_inspector for PERMISSIVE
    sds_secret_config(name) -> SdsSecretConfig                    # fetched over ADS, API V3

Both sides present the ``default`` secret (the workload certificate) and validate the peer with the
``ROOTCA`` secret (the trust bundle) plus a SAN matcher, combined through
``CommonTlsContext.combined_validation_context`` (Envoy docs: "Secret discovery service (SDS)" and
``envoy/extensions/transport_sockets/tls/v3/tls.proto``):

- inbound: any SPIFFE ID of the trust domain (URI SAN prefix ``spiffe://<trust domain>/``), so a peer
  from another trust domain is refused even when its root is somehow trusted;
- outbound: exactly the destination's SPIFFE ID, so a wrong service answering is refused.

Modes are Istio's PeerAuthentication modes: STRICT accepts only mTLS; PERMISSIVE accepts mTLS and
plaintext on one port (two filter chains told apart by ``transport_protocol`` from the
``envoy.filters.listener.tls_inspector`` listener filter); DISABLE is plaintext only.

The bootstrap must have ``dynamic_resources.ads_config``: the secrets come over the ADS stream. Clusters
using these contexts must themselves come over CDS: Envoy (1.40 included) crashes on a *static* cluster
whose TLS context fetches secrets over ADS (envoyproxy/envoy#15517, #19618). Static listeners are fine.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from envoykit.control.pki.sds import DEFAULT_SECRET, ROOTCA_SECRET
from envoykit.core.spiffe import parse_spiffe_id, validate_trust_domain

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
DEFAULT_ALPN = ("h2", "http/1.1")


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """``SdsSecretConfig`` for secret ``name``: ``sds_config: {ads: {}, resource_api_version: V3}``."""
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.ApiVersion.V3,
        ),
    )


# built once: message arguments to a constructor are copied, so sharing these is safe
_DEFAULT_SDS = sds_secret_config(DEFAULT_SECRET)
_ROOTCA_SDS = sds_secret_config(ROOTCA_SECRET)
_TLS_PARAMS = common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2)


def _uri_san(matcher: string_pb2.StringMatcher) -> common_pb2.SubjectAltNameMatcher:
    return common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher)


def _common(san: common_pb2.SubjectAltNameMatcher, alpn: Sequence[str]) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_params=_TLS_PARAMS,
        tls_certificate_sds_secret_configs=[_DEFAULT_SDS],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=[san]
            ),
            validation_context_sds_secret_config=_ROOTCA_SDS,
        ),
        alpn_protocols=list(alpn),
    )


def inbound_tls_context(
    trust_domain: str, *, alpn: Sequence[str] = DEFAULT_ALPN
) -> tls_pb2.DownstreamTlsContext:
    """The server side of mesh mTLS: present ``default``, require a client certificate, trust ``ROOTCA``,
    accept only URI SANs starting with ``spiffe://<trust_domain>/``.

    Args:
        trust_domain: the mesh's trust domain.
        alpn: ALPN protocols offered (default ``h2``, ``http/1.1``; suits an HCM with ``codec_type: AUTO``).

    Raises:
        InvalidSpiffeId: ``trust_domain`` is not a valid trust domain.
    """
    validate_trust_domain(trust_domain)
    san = _uri_san(string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/"))
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(san, alpn),
        require_client_certificate={"value": True},
    )


def outbound_tls_context(
    server_spiffe_id: str, *, sni: str | None = None, alpn: Sequence[str] = ()
) -> tls_pb2.UpstreamTlsContext:
    """The client side of mesh mTLS: present ``default``, trust ``ROOTCA``, accept only a server whose URI
    SAN is exactly ``server_spiffe_id`` (the destination's service account).

    Args:
        server_spiffe_id: SPIFFE ID the destination must prove.
        sni: SNI to send (optional).
        alpn: ALPN protocols to offer; empty by default (set ``("h2",)`` for an HTTP/2 cluster).

    Raises:
        InvalidSpiffeId: ``server_spiffe_id`` is not a valid SPIFFE ID.
    """
    sid = parse_spiffe_id(server_spiffe_id)
    san = _uri_san(string_pb2.StringMatcher(exact=sid.uri))
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=_common(san, alpn))
    if sni:
        ctx.sni = sni
    return ctx


def tls_transport_socket(
    context: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext,
) -> base_pb2.TransportSocket:
    """Wrap a TLS context as the ``envoy.transport_sockets.tls`` transport socket (chain or cluster)."""
    typed = any_pb2.Any()
    typed.Pack(context)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=typed)


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    """The ``envoy.filters.listener.tls_inspector`` listener filter (sets ``transport_protocol``)."""
    typed = any_pb2.Any()
    typed.Pack(tls_inspector_pb2.TlsInspector())
    return listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR, typed_config=typed)


def inbound_listener_filters(mode: MtlsMode) -> list[listener_components_pb2.ListenerFilter]:
    """Listener filters an inbound listener needs for ``mode``: TLS inspector for PERMISSIVE, else none."""
    return [tls_inspector()] if mode == "PERMISSIVE" else []


def inbound_filter_chains(
    filters: Sequence[listener_components_pb2.Filter],
    trust_domain: str,
    mode: MtlsMode = "STRICT",
    *,
    alpn: Sequence[str] = DEFAULT_ALPN,
) -> list[listener_components_pb2.FilterChain]:
    """Filter chains of an inbound listener running ``filters`` (e.g. one HTTP connection manager).

    - STRICT: one chain with mTLS (:func:`inbound_tls_context`); plaintext clients fail the handshake.
    - PERMISSIVE: a chain matched on ``transport_protocol: tls`` with mTLS, and a plaintext chain for the
      rest; add :func:`inbound_listener_filters` to the listener.
    - DISABLE: one plaintext chain.

    Raises:
        ValueError: unknown ``mode``.
        InvalidSpiffeId: ``trust_domain`` is not valid.
    """
    if mode not in ("STRICT", "PERMISSIVE", "DISABLE"):
        raise ValueError(f"unknown mTLS mode {mode!r}: use STRICT, PERMISSIVE or DISABLE")
    plain = listener_components_pb2.FilterChain(name="plaintext", filters=[copy.deepcopy(f) for f in filters])
    if mode == "DISABLE":
        return [plain]
    mtls = listener_components_pb2.FilterChain(
        name="mtls",
        filters=[copy.deepcopy(f) for f in filters],
        transport_socket=tls_transport_socket(inbound_tls_context(trust_domain, alpn=alpn)),
    )
    if mode == "STRICT":
        return [mtls]
    mtls.filter_chain_match.transport_protocol = "tls"
    return [mtls, plain]
