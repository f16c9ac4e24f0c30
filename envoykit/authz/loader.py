"""Load a policy directory into a :class:`Policy`, or refuse it whole with file and line.

A policy directory holds:

* ``*.py`` rule modules (files starting with ``_`` are skipped, so helpers can live beside them);
* ``*.yaml`` / ``*.yml`` AuthorizationPolicy documents (several per file with ``---``);
* ``authn.yaml`` (optional): JWT issuers and API keys (:mod:`envoykit.authz.authn_config`).

Every module is compiled and executed when the directory loads (never on the request path). A syntax
error, an exception while importing, an invalid YAML field or two rules with the same name makes the
whole load fail with a :class:`~envoykit.core.ConfigError`; the server then keeps the last good policy.
"""

from __future__ import annotations

import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from envoykit.authz.authn_config import AuthnConfig
from envoykit.authz.istio import AuthorizationPolicy, compile_policy
from envoykit.authz.jwt_verify import Authenticator
from envoykit.authz.rules import RULE_ATTR, Rule
from envoykit.core.errors import ConfigError
from envoykit.core.yamlfile import YamlDocument, load_yaml_file, validation_error_to_config_error

AUTHN_FILE = "authn.yaml"


@dataclass
class Policy:
    """A loaded policy: rules in evaluation order and the authenticator.

    Attributes:
        rules: every rule, DENY and ALLOW, in file then definition order.
        deny_rules / allow_rules: the same split by action.
        authenticator: verifies JWTs and API keys (an empty one when there is no ``authn.yaml``).
        files: the files this policy was loaded from.
        yaml_policies: the AuthorizationPolicy documents with the YAML they came from (for RBAC
            compilation, whose errors name the line of the field).
    """

    rules: list[Rule]
    authenticator: Authenticator
    files: list[str] = field(default_factory=list)
    yaml_policies: list[tuple[AuthorizationPolicy, YamlDocument]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.deny_rules = [r for r in self.rules if r.action == "DENY"]
        self.allow_rules = [r for r in self.rules if r.action == "ALLOW"]


def _load_module(path: Path) -> list[Rule]:
    src = path.read_text(encoding="utf-8")
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
    try:
        text = path.read_text(encoding="utf-8")
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
            raise validation_error_to_config_error(exc, doc) from exc
        rules.append((pol, doc))
    return rules


def load_authn(path: Path, previous: Authenticator | None = None) -> Authenticator:
    """Load ``authn.yaml`` (or an empty config when absent) into an :class:`Authenticator`.

    Raises:
        ConfigError: invalid YAML or field, naming file, line and field path.
    """
    if not path.exists():
        return Authenticator(AuthnConfig(), path.parent, previous)
    doc = load_yaml_file(path)
    try:
        cfg = AuthnConfig.model_validate(doc.data or {})
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, doc) from exc
    return Authenticator(cfg, path.parent, previous)


def load_policy(directory: str | Path, previous: Policy | None = None) -> Policy:
    """Load every rule module, AuthorizationPolicy file and ``authn.yaml`` under ``directory``.

    Raises:
        ConfigError: the directory is missing, or any file fails (see the module docstring).
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError("policy directory does not exist", file=str(d))
    rules: list[Rule] = []
    files: list[str] = []
    yaml_policies: list[tuple[AuthorizationPolicy, YamlDocument]] = []
    for path in sorted(d.iterdir()):
        if path.name.startswith(("_", ".")) or not path.is_file():
            continue
        if path.suffix == ".py":
            rules.extend(_load_module(path))
        elif path.suffix in (".yaml", ".yml") and path.name != AUTHN_FILE:
            docs = _load_yaml_policies(path)
            yaml_policies.extend(docs)
            rules.extend(compile_policy(pol, f"{doc.path}:{doc.line_of(())}") for pol, doc in docs)
        else:
            continue
        files.append(str(path))
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
    return Policy(rules=rules, authenticator=authn, files=files, yaml_policies=yaml_policies)
