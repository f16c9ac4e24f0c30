"""Load ``mesh.yaml``: parse, validate the schema (layer 1) and the semantics (layer 2).

Errors are :class:`~envoykit.core.errors.ConfigError` naming the file, the line and the field path,
e.g. ``mesh.yaml:41: virtual_services.0.http.0.route: weights sum to 95, not 100``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.semantics import check_mesh
from envoykit.core.errors import ConfigError
from envoykit.core.yamlfile import (
    YamlDocument,
    load_yaml_file,
    parse_yaml_text,
    validation_error_to_config_error,
    yaml_error,
)


@dataclass(frozen=True)
class LoadedMesh:
    """A validated mesh and where it came from.

    Attributes:
        mesh: the model.
        path: the file it was read from.
        base_dir: the file's directory (relative paths in the model are resolved against it).
        files: the files the model references (Wasm modules, TLS files, the authz policy
            directory), watched for changes too.
        doc: the parsed YAML document, for errors about a field found after validation (its line).
    """

    mesh: Mesh
    path: Path
    base_dir: Path
    files: tuple[Path, ...]
    doc: YamlDocument | None = None


# libyaml when present: a 1,000-service mesh.yaml parses several times faster
_FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path) -> YamlDocument:
    """Parse once (nodes with line marks, then values from the same nodes); on any problem let core's
    reader produce its error, which names the file and line."""
    try:
        loader = _FastLoader(path.read_text(encoding="utf-8"))
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return load_yaml_file(path)
    return YamlDocument(path=str(path), data=data, root=root)


def _validate(doc: YamlDocument) -> Mesh:
    data: Any = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(
            "a mesh file is a mapping (api_version, services, gateways, ...)", file=doc.path, line=1
        )
    try:
        mesh = Mesh.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, doc, model=Mesh) from exc
    problems = check_mesh(mesh)
    if problems:
        first = problems[0]
        message = first.message
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more: {'; '.join(str(p) for p in problems[1:4])})"
        raise yaml_error(doc, first.loc, message)
    return mesh


def _referenced(mesh: Mesh, base: Path) -> tuple[Path, ...]:
    files = [Path(w.file) for w in mesh.extensions.wasm]
    for gw in mesh.gateways:
        if gw.tls is not None:
            files += [Path(gw.tls.cert_file), Path(gw.tls.key_file)]
    gate = mesh.extensions.authz.gate
    if (
        gate is not None
        and mesh.extensions.authz.native_gate
        and not gate.startswith(("http://", "https://"))
    ):
        files.append(Path(gate))  # the native gate follows the document the authz server rewrites
    return tuple(f if f.is_absolute() else (base / f).resolve() for f in files)


def load_mesh(path: str | Path) -> LoadedMesh:
    """Read and validate ``path`` (schema and semantics).

    Raises:
        ConfigError: unreadable, not YAML, schema or semantic error (file, line, field path, reason).
    """
    p = Path(path)
    doc = _read(p)
    mesh = _validate(doc)
    base = p.resolve().parent
    for gi, gw in enumerate(mesh.gateways):
        for field in ("cert_file", "key_file"):
            name = getattr(gw.tls, field) if gw.tls else None
            if name and not (base / name).is_file():  # an absolute name stays absolute
                raise yaml_error(doc, ("gateways", gi, "tls", field), f"no such file: {name}")
    policy_dir = mesh.extensions.authz.policy_dir
    if policy_dir is not None and not (base / policy_dir).is_dir():
        raise yaml_error(doc, ("extensions", "authz", "policy_dir"), f"no such directory: {policy_dir}")
    decision_log = mesh.extensions.authz.decision_log
    if decision_log is not None and not (base / decision_log).parent.is_dir():
        # Envoy would refuse every gated listener (it cannot open the file): say so here
        where = ("extensions", "authz", "decision_log")
        raise yaml_error(doc, where, f"no such directory: {(base / decision_log).parent}")
    return LoadedMesh(mesh=mesh, path=p, base_dir=base, files=_referenced(mesh, base), doc=doc)


def parse_mesh(text: str, name: str = "<mesh>") -> Mesh:
    """Validate a mesh given as YAML text (``name`` is used in error messages).

    Raises:
        ConfigError: as :func:`load_mesh`.
    """
    return _validate(parse_yaml_text(text, name))
