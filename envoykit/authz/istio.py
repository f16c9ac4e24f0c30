"""Istio's AuthorizationPolicy as a validated model, for authors who need no code.

Field names, defaults and meaning follow
https://istio.io/latest/docs/reference/config/security/authorization-policy/ ::

    apiVersion: security.istio.io/v1          # optional (v1beta1 too)
    kind: AuthorizationPolicy
    metadata:
      name: backend-callers
      namespace: shop                          # optional: scope (see below)
      annotations: {istio.io/dry-run: "true"}  # optional: decide and log, never enforce
    spec:
      selector: {matchLabels: {app: backend}}  # optional: scope
      action: ALLOW                            # or DENY; AUDIT and CUSTOM are refused
      rules:
        - from: [{source: {principals: [...], serviceAccounts: [shop/frontend], ipBlocks: [10.0.0.0/8]}}]
          to: [{operation: {methods: [GET], paths: ["/api/{*}/items"], ports: ["8080"]}}]
          when: [{key: request.auth.claims[groups], values: [admins]}]

**Scope.** A policy applies to the destination workload when ``metadata.namespace`` is absent, is the
root namespace (:data:`ROOT_NAMESPACE`), or equals the workload's namespace; and
``spec.selector.matchLabels`` (when given) are all among the workload's labels. What the server knows
of the destination is :class:`Workload` (see :meth:`Workload.from_request`); a fact it does not know
does not exclude a policy (an unknown scope applies the policy: fail closed).

Matching itself (:mod:`envoykit.authz.istio_match` for the Python path, :mod:`envoykit.authz.rbac`
for Envoy's RBAC filter) is Istio's: a rule matches when any ``from``, any ``to`` and every ``when``
match; a policy when any rule does; an ALLOW policy with no rules matches nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from envoykit.authz.paths import check_path_pattern
from envoykit.core.authzgate import policy_selects

if TYPE_CHECKING:
    from envoykit.authz.request import Request

_Str = tuple[str, ...]

#: Istio's default ``meshConfig.rootNamespace``: a policy there applies to every namespace.
ROOT_NAMESPACE = "istio-system"
DRY_RUN_ANNOTATION = "istio.io/dry-run"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _cidrs(v: _Str) -> _Str:
    for block in v:
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            raise ValueError(f"{block!r} is not an IP address or CIDR block") from None
    return v


def _ports(v: _Str) -> _Str:
    for p in v:
        if not re.fullmatch(r"[0-9]{1,5}", p) or int(p) > 65535:
            raise ValueError(f"{p!r} is not a port number (Istio ports are exact numbers)")
    return v


class Source(_M):
    principals: _Str = ()
    not_principals: _Str = Field((), alias="notPrincipals")
    request_principals: _Str = Field((), alias="requestPrincipals")
    not_request_principals: _Str = Field((), alias="notRequestPrincipals")
    namespaces: _Str = ()
    not_namespaces: _Str = Field((), alias="notNamespaces")
    service_accounts: _Str = Field((), alias="serviceAccounts")
    not_service_accounts: _Str = Field((), alias="notServiceAccounts")
    ip_blocks: _Str = Field((), alias="ipBlocks")
    not_ip_blocks: _Str = Field((), alias="notIpBlocks")
    remote_ip_blocks: _Str = Field((), alias="remoteIpBlocks")
    not_remote_ip_blocks: _Str = Field((), alias="notRemoteIpBlocks")

    @field_validator("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks")
    @classmethod
    def _check_cidrs(cls, v: _Str) -> _Str:
        return _cidrs(v)

    @field_validator("service_accounts", "not_service_accounts")
    @classmethod
    def _sa_form(cls, v: _Str) -> _Str:
        for sa in v:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?", sa):
                raise ValueError(f"{sa!r}: a service account is <namespace>/<name>, without wildcards")
        return v

    @model_validator(mode="after")
    def _sa_alone(self) -> Source:
        if (self.service_accounts or self.not_service_accounts) and (
            self.principals or self.not_principals or self.namespaces or self.not_namespaces
        ):
            raise ValueError("serviceAccounts cannot be combined with principals or namespaces (Istio)")
        return self


class Operation(_M):
    hosts: _Str = ()
    not_hosts: _Str = Field((), alias="notHosts")
    ports: _Str = ()
    not_ports: _Str = Field((), alias="notPorts")
    methods: _Str = ()
    not_methods: _Str = Field((), alias="notMethods")
    paths: _Str = ()
    not_paths: _Str = Field((), alias="notPaths")

    @field_validator("paths", "not_paths")
    @classmethod
    def _path_patterns(cls, v: _Str) -> _Str:
        return tuple(check_path_pattern(p) for p in v)

    @field_validator("ports", "not_ports")
    @classmethod
    def _check_ports(cls, v: _Str) -> _Str:
        return _ports(v)


class From(_M):
    source: Source


class To(_M):
    operation: Operation


SIMPLE_KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")
CLAIM_KEY = re.compile(r"^request\.auth\.claims((?:\[[^\]]+\])+)$")


class Condition(_M):
    key: str
    values: _Str = ()
    not_values: _Str = Field((), alias="notValues")

    @field_validator("key")
    @classmethod
    def _known_key(cls, v: str) -> str:
        if v in SIMPLE_KEYS or HEADER_KEY.match(v) or CLAIM_KEY.match(v):
            return v
        raise ValueError(f"unsupported condition key {v!r}")

    @model_validator(mode="after")
    def _typed_values(self) -> Condition:
        if not self.values and not self.not_values:
            raise ValueError("give values or notValues (Istio requires one)")
        if self.key in IP_KEYS:
            _cidrs(self.values + self.not_values)
        elif self.key == "destination.port":
            _ports(self.values + self.not_values)
        return self


class RuleSpec(_M):
    from_: tuple[From, ...] = Field((), alias="from")
    to: tuple[To, ...] = ()
    when: tuple[Condition, ...] = ()


class WorkloadSelector(_M):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")


_REFUSED_ACTIONS = {
    "CUSTOM": "action CUSTOM delegates to an external authorizer, and envoykit's server is that "
    "authorizer: write the check as a Python rule (*.py) instead",
    "AUDIT": "action AUDIT needs an audit plugin Envoy does not have here: use dryRun "
    "(istio.io/dry-run) and the decision log to record matches",
}


class Spec(_M):
    selector: WorkloadSelector | None = None
    action: str = "ALLOW"
    rules: tuple[RuleSpec, ...] = ()
    dry_run: bool = Field(False, alias="dryRun")  # envoykit extension; Istio uses the annotation
    provider: dict[str, Any] | None = None
    target_ref: dict[str, Any] | None = Field(None, alias="targetRef")
    target_refs: tuple[dict[str, Any], ...] | None = Field(None, alias="targetRefs")

    @field_validator("action")
    @classmethod
    def _action(cls, v: str) -> str:
        if v in _REFUSED_ACTIONS:
            raise ValueError(_REFUSED_ACTIONS[v])
        if v not in ("ALLOW", "DENY"):
            raise ValueError(f"action must be ALLOW or DENY, not {v!r}")
        return v

    @model_validator(mode="after")
    def _refused_fields(self) -> Spec:
        if self.provider is not None:
            raise ValueError("provider belongs to action CUSTOM, which envoykit refuses")
        if self.target_ref is not None or self.target_refs is not None:
            raise ValueError(
                "targetRef/targetRefs (Gateway API attachment) is not supported: scope with "
                "metadata.namespace and selector.matchLabels"
            )
        return self


class Metadata(_M):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    namespace: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("annotations")
    @classmethod
    def _dry_run_value(cls, v: dict[str, str]) -> dict[str, str]:
        if DRY_RUN_ANNOTATION in v and v[DRY_RUN_ANNOTATION] not in ("true", "false"):
            raise ValueError(f'{DRY_RUN_ANNOTATION} must be "true" or "false"')
        return v


@dataclass(frozen=True)
class Workload:
    """What the server knows of the destination workload; ``None``/empty means unknown.

    Attributes:
        namespace: from the destination's SPIFFE ID (``attributes.destination.principal``: the
            certificate of the Envoy that took the connection).
        labels: ``attributes.destination.labels``: Envoy fills them from its node metadata key named by
            the ext_authz filter's ``bootstrap_metadata_labels_key`` (the control plane sends the
            workload's labels with ``app`` and ``version`` under ``labels``).
    """

    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_request(cls, req: Request) -> Workload:
        sp = req.destination_spiffe
        return cls(sp.namespace if sp else None, req.destination_labels)


class AuthorizationPolicy(_M):
    """One AuthorizationPolicy document."""

    api_version: str = Field("security.istio.io/v1", alias="apiVersion")
    kind: Literal["AuthorizationPolicy"]
    metadata: Metadata
    spec: Spec = Field(default_factory=lambda: Spec.model_validate({}))

    @property
    def id(self) -> str:
        """The rule name this policy gets: ``<namespace>/<name>``, or ``<name>`` without a namespace."""
        ns = self.metadata.namespace
        return f"{ns}/{self.metadata.name}" if ns else self.metadata.name

    @property
    def dry_run(self) -> bool:
        """``istio.io/dry-run: "true"`` (or envoykit's ``spec.dryRun``): decide and log, never enforce."""
        return self.spec.dry_run or self.metadata.annotations.get(DRY_RUN_ANNOTATION) == "true"

    def selects(self, workload: Workload) -> bool:
        """True when this policy applies to ``workload`` (unknown facts never exclude it)."""
        ns = self.metadata.namespace
        want = self.spec.selector.match_labels if self.spec.selector else {}
        # one rule for the server and the gate the control plane assembles (envoykit.core.authzgate)
        return policy_selects(ns if ns != ROOT_NAMESPACE else None, want, workload)

    @property
    def scoped(self) -> bool:
        """True when the policy names a namespace (other than the root) or a selector."""
        ns = self.metadata.namespace
        return bool((ns and ns != ROOT_NAMESPACE) or (self.spec.selector and self.spec.selector.match_labels))
