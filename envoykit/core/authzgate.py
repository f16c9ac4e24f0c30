"""The authz native gate as data: the document ``envoykit authz serve`` publishes, and its assembly
into Envoy RBAC filters for one listener.

The authz server compiles its policy directory on every load it accepts (:mod:`envoykit.authz.gate`)
into a :class:`GateDocument`: the policy-independent parts of the gate (the YAML policies' RBAC
``Policy`` messages with their scope, the "Python must decide" permission, the credential headers)
plus a ``digest`` of them. It writes that document atomically to a file (``--gate-file``) and serves
it on its metrics port (``GET /gate``). The control plane and ``envoykit envoy inject`` read only this
document — never the policy files — and :func:`assemble` it for the workload views of each listener,
so the gate Envoy runs is always the one of the policy the server serves (or none at all).

Fail closed: a document that cannot be read or checked gives no gate (:class:`GateDocError`; every
request then goes to ext_authz, which is always safe); ``no_gate`` in the document, or a policy that
cannot be compiled for a view, gives :class:`NoGate` (same outcome).

How the filters work is described in :mod:`envoykit.authz.gate` and docs/authz.md ("The native gate").
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envoykit.core.errors import ConfigError

#: ``GateDocument.kind``.
KIND = "envoykit.authz.gate"
#: Dynamic metadata namespace the HTTP RBAC filter writes (its shadow engine result).
RBAC_METADATA_NAMESPACE = "envoy.filters.http.rbac"
#: ``shadow_rules_stat_prefix`` of the gate; also the prefix of its metadata keys and shadow stats.
GATE_PREFIX = "envoykit_gate_"
#: The metadata key ext_authz reads: ``allowed`` = Python must decide, ``denied`` = decided here.
RESULT_KEY = GATE_PREFIX + "shadow_engine_result"
#: The RBAC policy standing for "a Python rule applies or a credential is present".
PYTHON_POLICY = "envoykit-python"
DENY_FILTER = "envoykit.gate.deny"
ALLOW_FILTER = "envoykit.gate.allow"
GATE_FILTERS = (DENY_FILTER, ALLOW_FILTER)
#: A namespace no policy names: the view "the server knows some other namespace".
OTHER_NAMESPACE = "\x00other"


class NoGate(ConfigError):
    """The policy cannot be split safely (the message says why): every request goes to ext_authz."""


class GateDocError(ConfigError):
    """The gate document cannot be read or is not a valid one: no gate (every request to ext_authz)."""


class Where(BaseModel):
    """A reason with the place it comes from (an error's file, line and field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None


class ScopedPolicy(BaseModel):
    """One enforced (not dry-run) YAML AuthorizationPolicy, compiled on its own.

    Attributes:
        id: ``<namespace>/<name>`` or ``<name>``.
        action: ``ALLOW`` or ``DENY``.
        namespace: the namespace it is scoped to; None when it has none or is the root namespace.
        match_labels: ``spec.selector.matchLabels``.
        rules: RBAC ``Policy`` messages (proto JSON) by name ``<id>[<rule index>]``.
        not_compilable: why it has no RBAC form (JWT facts); a view it applies to gets no gate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    action: Literal["ALLOW", "DENY"]
    namespace: str | None = None
    match_labels: dict[str, str] = Field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    not_compilable: Where | None = None


class GateDocument(BaseModel):
    """What ``envoykit authz serve`` publishes on each policy load it accepts (JSON).

    Attributes:
        kind / version: :data:`KIND`, 1.
        digest: sha256 of the document's content without ``digest`` and ``policy_files``
            (:func:`document_digest`): the gate's version; equal digests are equal gates.
        policy_files: the policy files it was compiled from (for humans).
        no_gate: set when the policy cannot be split at all (a Python rule without pre-match).
        ambiguous_path: the RBAC ``Policy`` that denies ambiguous paths, as the server does.
        ambiguous_path_name: its policy name.
        python: the ``Permission`` matching every request a Python rule applies to or that carries a
            credential (None: no such rule or credential).
        python_rules / credentials: for notes: the Python rules and credential headers behind it.
        policies: the enforced YAML policies in load order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["envoykit.authz.gate"] = "envoykit.authz.gate"
    version: Literal[1] = 1
    digest: str = ""
    policy_files: tuple[str, ...] = ()
    no_gate: Where | None = None
    ambiguous_path_name: str = ""
    ambiguous_path: dict[str, Any] = Field(default_factory=dict)
    python: dict[str, Any] | None = None
    python_rules: tuple[str, ...] = ()
    credentials: tuple[str, ...] = ()
    policies: tuple[ScopedPolicy, ...] = ()


class View(Protocol):
    """What the server may know of the destination workload (``envoykit.authz.istio.Workload``)."""

    @property
    def namespace(self) -> str | None: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Gate:
    """A gate assembled for one listener.

    Attributes:
        filters: the RBAC ``HttpFilter`` messages to place, in order, right before ext_authz.
        ext_authz_enabled: the ext_authz filter's ``filter_enabled_metadata``.
        python_rules: names of the rules whose requests go to ext_authz.
        credentials: header names whose presence sends a request to ext_authz (authn.yaml).
        digest: the document's digest.
    """

    filters: tuple[hcm.HttpFilter, ...]
    ext_authz_enabled: metadata_pb2.MetadataMatcher
    python_rules: tuple[str, ...]
    credentials: tuple[str, ...]
    digest: str = ""

    @property
    def filter_names(self) -> tuple[str, ...]:
        """Names of the gate's filters (to disable them where ext_authz is disabled per route)."""
        return tuple(f.name for f in self.filters)


def proto_json(msg: Any) -> dict[str, Any]:
    """A protobuf message as the JSON-compatible dict this document stores (proto field names)."""
    out: dict[str, Any] = json.loads(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
    return out


def document_digest(doc: GateDocument) -> str:
    """sha256 (hex) of ``doc``'s canonical JSON without its ``digest`` and ``policy_files`` (where the
    files were read from does not change the gate: replicas mounting them elsewhere agree)."""
    body = json.dumps(
        doc.model_dump(mode="json", exclude={"digest", "policy_files"}), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def with_digest(doc: GateDocument) -> GateDocument:
    """``doc`` with its ``digest`` filled in."""
    return doc.model_copy(update={"digest": document_digest(doc)})


def policy_selects(namespace: str | None, match_labels: Mapping[str, str], view: View) -> bool:
    """True when a policy scoped to ``namespace`` (None: none, or the root namespace) and
    ``match_labels`` applies to ``view`` (unknown facts never exclude it; Istio's scoping)."""
    if namespace and view.namespace and namespace != view.namespace:
        return False
    if match_labels and view.labels:
        return all(view.labels.get(k) == v for k, v in match_labels.items())
    return True


def ext_authz_enabled_matcher() -> metadata_pb2.MetadataMatcher:
    """ext_authz runs unless the gate's shadow result is ``denied`` (``MetadataMatcher.invert``)."""
    return metadata_pb2.MetadataMatcher(
        filter=RBAC_METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=RESULT_KEY)],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact="denied")),
        invert=True,
    )


def _parse(msg_type: Any, value: dict[str, Any], what: str) -> Any:
    try:
        return ParseDict(value, msg_type())
    except ParseError as exc:
        raise GateDocError(
            f"gate document: {what} is not a valid {msg_type.DESCRIPTOR.full_name}: {exc}"
        ) from None


def _view_rules(doc: GateDocument, view: View) -> dict[str, rbac_pb2.RBAC]:
    """The enforced RBAC rules by action for ``view`` (as the server selects policies for it)."""
    deny = {doc.ambiguous_path_name: _parse(rbac_pb2.Policy, doc.ambiguous_path, "ambiguous_path")}
    allow: dict[str, rbac_pb2.Policy] = {}
    has_allow = False
    for pol in doc.policies:
        if not policy_selects(pol.namespace, pol.match_labels, view):
            continue
        if pol.not_compilable is not None:
            w = pol.not_compilable
            raise NoGate(
                f"{w.message}; the gate needs every YAML policy compilable",
                file=w.file,
                line=w.line,
                field=w.field,
            )
        has_allow |= pol.action == "ALLOW"
        target = deny if pol.action == "DENY" else allow
        for name, value in pol.rules.items():
            target[name] = _parse(rbac_pb2.Policy, value, f"policy {name}")
    out = {"DENY": rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY, policies=deny)}
    if has_allow:
        out["ALLOW"] = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=allow)
    return out


def _or(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return items[0] if len(items) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=items))


def _and(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return (
        items[0] if len(items) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=items))
    )


def assemble(doc: GateDocument, views: Sequence[View]) -> Gate:
    """The gate for a listener where the server may see any of ``views`` of the destination.

    Raises:
        NoGate: the document says the policy cannot be split, a policy that applies has no RBAC
            form, or the policies' scope differs between ``views``.
        GateDocError: a message in the document does not parse.
    """
    if doc.no_gate is not None:
        w = doc.no_gate
        raise NoGate(w.message, file=w.file, line=w.line, field=w.field)
    if not doc.ambiguous_path_name:
        raise GateDocError("gate document: no ambiguous_path_name")
    compiled = [_view_rules(doc, v) for v in views]
    first = compiled[0]
    for other in compiled[1:]:
        if {k: v.SerializeToString(deterministic=True) for k, v in other.items()} != {
            k: v.SerializeToString(deterministic=True) for k, v in first.items()
        }:
            raise NoGate(
                "a policy's namespace or selector decides differently for what the server may see here"
            )
    needs = _parse(rbac_pb2.Permission, doc.python, "python") if doc.python is not None else None
    deny_rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
    for name, pol in first["DENY"].policies.items():
        gated = rbac_pb2.Policy()
        gated.CopyFrom(pol)
        if needs is not None and name != doc.ambiguous_path_name:
            perm = _or(list(pol.permissions))
            del gated.permissions[:]
            gated.permissions.append(_and([perm, rbac_pb2.Permission(not_rule=needs)]))
        deny_rules.policies[name].CopyFrom(gated)
    shadow = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    python = (
        rbac_pb2.Policy(permissions=[needs], principals=[rbac_pb2.Principal(any=True)]) if needs else None
    )
    if python is not None:
        shadow.policies[PYTHON_POLICY].CopyFrom(python)
    filters = [hcm.HttpFilter(name=DENY_FILTER)]
    filters[0].typed_config.Pack(
        http_rbac.RBAC(
            rules=deny_rules,
            rules_stat_prefix=GATE_PREFIX + "deny_",
            shadow_rules=shadow,
            shadow_rules_stat_prefix=GATE_PREFIX,
        )
    )
    allow = first.get("ALLOW")
    if allow is not None:
        allow_rules = rbac_pb2.RBAC()
        allow_rules.CopyFrom(allow)
        if python is not None:
            allow_rules.policies[PYTHON_POLICY].CopyFrom(python)
        f = hcm.HttpFilter(name=ALLOW_FILTER)
        f.typed_config.Pack(http_rbac.RBAC(rules=allow_rules, rules_stat_prefix=GATE_PREFIX + "allow_"))
        filters.append(f)
    return Gate(tuple(filters), ext_authz_enabled_matcher(), doc.python_rules, doc.credentials, doc.digest)


def parse_document(data: bytes | str, source: str) -> GateDocument:
    """Check a gate document (JSON) and its digest.

    Raises:
        GateDocError: not JSON, not a gate document of a known version, or a digest that does not
            match the content (a torn or edited file).
    """
    try:
        doc = GateDocument.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise GateDocError(f"{source}: not an envoykit gate document: {loc}: {first['msg']}") from None
    if doc.digest != document_digest(doc):
        raise GateDocError(f"{source}: the gate document's digest does not match its content")
    return doc


def read_document(source: str, timeout_s: float = 2.0) -> GateDocument:
    """Read the gate document from a file path or an ``http://`` URL (``GET /gate`` of the server).

    Raises:
        GateDocError: unreadable, unreachable, not 200, or invalid (see :func:`parse_document`).
    """
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=timeout_s) as resp:
                data = resp.read()
        else:
            data = Path(source).read_bytes()
    except (OSError, urllib.error.URLError) as exc:
        raise GateDocError(f"{source}: cannot read the gate document: {exc}") from None
    return parse_document(data, source)


def write_document(doc: GateDocument, path: Path) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file in the same directory, then rename), so
    a reader sees the old document or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(doc.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
