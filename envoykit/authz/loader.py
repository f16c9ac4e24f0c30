"""Load a policy directory into a :class:`Policy`, or refuse it whole with file and line.

A policy directory holds:

* ``*.py`` rule modules (files starting with ``_`` are skipped, so helpers can live beside them);
* ``*.yaml`` / ``*.yml`` AuthorizationPolicy documents (several per file with ``---``);
* ``authn.yaml`` (optional): JWT issuers and API keys (:mod:`envoykit.authz.authn_config`).

Every module is compiled and executed when the directory loads (never on the request path). A syntax
error, an exception while importing, an invalid YAML field or two rules with the same name makes the
whole load fail with a :class:`~envoykit.core.ConfigError`; the server then keeps the last good policy.

A reload that would *empty* a serving policy is refused the same way, because a file caught truncated
looks exactly like that (see :func:`check_not_emptied`): every rule or every file gone, a file that had
rules now has none, or ``authn.yaml`` emptied or removed. The operator says an empty result is intended
with ``allow_empty`` (``envoykit authz serve --allow-empty-policy``) or an ``EMPTY_POLICY`` file in the
directory.
"""

from __future__ import annotations

import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from envoykit.authz.authn_config import AuthnConfig
from envoykit.authz.istio import AuthorizationPolicy
from envoykit.authz.istio_match import compile_policy
from envoykit.authz.jwt_verify import Authenticator
from envoykit.authz.rules import RULE_ATTR, Rule
from envoykit.core.errors import ConfigError
from envoykit.core.yamlfile import YamlDocument, load_yaml_file, validation_error_to_config_error

AUTHN_FILE = "authn.yaml"
#: A file of this name in the policy directory says "an empty policy is intended" (see the module doc).
EMPTY_MARKER = "EMPTY_POLICY"


class PolicyEmptied(ConfigError):
    """A reload would remove every rule, every file, a whole file's rules or ``authn.yaml``."""


@dataclass
class Policy:
    """A loaded policy: rules in evaluation order and the authenticator.

    Attributes:
        rules: every rule, DENY and ALLOW, in file then definition order.
        deny_rules / allow_rules: the same split by action.
        blocking_rules: the rules marked ``blocking=True`` (decided on a handler thread).
        authenticator: verifies JWTs and API keys (an empty one when there is no ``authn.yaml``).
        files: the files this policy was loaded from.
        yaml_policies: the AuthorizationPolicy documents with the YAML they came from (for RBAC
            compilation, whose errors name the line of the field).
        rule_counts: rules per policy file (for the emptied-file check).
        authn_configured: ``authn.yaml`` exists and names at least one issuer or API key.
    """

    rules: list[Rule]
    authenticator: Authenticator
    files: list[str] = field(default_factory=list)
    yaml_policies: list[tuple[AuthorizationPolicy, YamlDocument]] = field(default_factory=list)
    rule_counts: dict[str, int] = field(default_factory=dict)
    authn_configured: bool = False

    def __post_init__(self) -> None:
        self.deny_rules = [r for r in self.rules if r.action == "DENY"]
        self.allow_rules = [r for r in self.rules if r.action == "ALLOW"]
        self.blocking_rules = [r for r in self.rules if r.blocking]


def read_policy_text(path: Path) -> str:
    """A policy file's text as UTF-8.

    Raises:
        ConfigError: unreadable, or not UTF-8 (naming the line and byte offset of the first bad byte).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}", file=str(path), line=line
        ) from None


def _load_module(path: Path) -> list[Rule]:
    src = read_policy_text(path)
    try:
        code = compile(src, str(path), "exec")
    except SyntaxError as exc:
        raise ConfigError(f"syntax error: {exc.msg}", file=str(path), line=exc.lineno) from exc
    module = types.ModuleType(f"envoykit_policy_{path.stem}")
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)
    except Exception as exc:
        line = None
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename == str(path):
                line = frame.lineno
                break
        raise ConfigError(f"{type(exc).__name__}: {exc}", file=str(path), line=line) from exc
    rules: list[Rule] = []
    for value in module.__dict__.values():
        rule = getattr(value, RULE_ATTR, None)
        if isinstance(rule, Rule) and getattr(value, "__module__", None) == module.__name__:
            rules.append(rule)
    return rules


def _load_yaml_policies(path: Path) -> list[tuple[AuthorizationPolicy, YamlDocument]]:
    text = read_policy_text(path)
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        datas = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"invalid YAML: {exc.problem}", file=str(path), line=mark.line + 1 if mark else None
        ) from exc
    rules = []
    for node, data in zip(docs, datas, strict=True):
        if data is None:
            continue
        doc = YamlDocument(str(path), data, node)
        try:
            pol = AuthorizationPolicy.model_validate(data)
        except ValidationError as exc:
            raise validation_error_to_config_error(exc, doc, model=AuthorizationPolicy) from exc
        rules.append((pol, doc))
    return rules


def load_authn(path: Path, previous: Authenticator | None = None) -> Authenticator:
    """Load ``authn.yaml`` (or an empty config when absent) into an :class:`Authenticator`.

    Raises:
        ConfigError: invalid YAML or field, naming file, line and field path.
    """
    if not path.exists():
        return Authenticator(AuthnConfig(), path.parent, previous)
    read_policy_text(path)  # a clear error for a non-UTF-8 byte
    doc = load_yaml_file(path)
    try:
        cfg = AuthnConfig.model_validate(doc.data or {})
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, doc, model=AuthnConfig) from exc
    return Authenticator(cfg, path.parent, previous)


def check_not_emptied(new: Policy, previous: Policy, directory: Path) -> None:
    """Refuse ``new`` when it empties what ``previous`` served (see the module docstring).

    Raises:
        PolicyEmptied: naming the file (or the directory) that was emptied.
    """
    if previous.files and not new.files:
        raise PolicyEmptied(f"every policy file is gone; refused. Create {EMPTY_MARKER} to mean it")
    if previous.rules and not new.rules:
        where = previous.files[0] if len(previous.files) == 1 else None
        raise PolicyEmptied(
            f"the new version has no rules (the serving one has {len(previous.rules)}); refused as a "
            f"likely half-written file. Pass --allow-empty-policy or create {EMPTY_MARKER} to mean it",
            file=where,
        )
    for f, n in previous.rule_counts.items():
        if n and f in new.rule_counts and not new.rule_counts[f]:
            raise PolicyEmptied(
                f"this file had {n} rule(s) and now has none (truncated?); refused. Delete the file to "
                f"remove its rules, or create {EMPTY_MARKER}",
                file=f,
            )
    if previous.authn_configured and not new.authn_configured:
        raise PolicyEmptied(
            "authn.yaml is empty or gone while issuers/API keys were configured; refused. "
            f"Write it with no entries ({{jwt: []}}) and create {EMPTY_MARKER} to mean it",
            file=str(directory / AUTHN_FILE),
        )


def load_policy(
    directory: str | Path, previous: Policy | None = None, *, allow_empty: bool = False
) -> Policy:
    """Load every rule module, AuthorizationPolicy file and ``authn.yaml`` under ``directory``.

    Args:
        directory: the policy directory.
        previous: the policy serving now; its JWKS are reused and the new version must not empty it
            (:func:`check_not_emptied`) unless ``allow_empty`` or an ``EMPTY_POLICY`` file says so.
        allow_empty: accept a version that empties ``previous``.

    Raises:
        ConfigError: the directory is missing, or any file fails (see the module docstring);
            :class:`PolicyEmptied` for a version that would empty ``previous``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError("policy directory does not exist", file=str(d))
    rules: list[Rule] = []
    files: list[str] = []
    counts: dict[str, int] = {}
    yaml_policies: list[tuple[AuthorizationPolicy, YamlDocument]] = []
    for path in sorted(d.iterdir()):
        if path.name.startswith(("_", ".")) or not path.is_file():
            continue
        before = len(rules)
        if path.suffix == ".py":
            rules.extend(_load_module(path))
        elif path.suffix in (".yaml", ".yml") and path.name != AUTHN_FILE:
            docs = _load_yaml_policies(path)
            yaml_policies.extend(docs)
            rules.extend(compile_policy(pol, f"{doc.path}:{doc.line_of(())}") for pol, doc in docs)
        else:
            continue
        files.append(str(path))
        counts[str(path)] = len(rules) - before
    seen: dict[str, Rule] = {}
    for r in rules:
        if r.name in seen:
            raise ConfigError(
                f"rule name {r.name!r} is defined twice (also at {seen[r.name].source})",
                file=r.source.rsplit(":", 1)[0] or None,
                line=int(r.source.rsplit(":", 1)[1]) if ":" in r.source else None,
            )
        seen[r.name] = r
    authn = load_authn(d / AUTHN_FILE, previous.authenticator if previous else None)
    cfg = authn.config
    policy = Policy(
        rules=rules,
        authenticator=authn,
        files=files,
        yaml_policies=yaml_policies,
        rule_counts=counts,
        authn_configured=bool(cfg.jwt or (cfg.api_keys is not None and cfg.api_keys.keys)),
    )
    if previous is not None and not allow_empty and not (d / EMPTY_MARKER).exists():
        check_not_emptied(policy, previous, d)
    return policy
