"""envoykit's control plane: one mesh model, validated, translated and served to every Envoy over ADS.

Public names::

    from envoykit.control import (
        Mesh, load_mesh, parse_mesh, check_mesh,          # the model, layer 1 and 2 validation
        translate, validate_translation,                  # resources per node, layer 3 (envoy)
        mesh_nodes, node_id, parse_node_id, bootstrap,    # the Envoys of a mesh and their bootstraps
        ControlPlane, AdsClient, remap_ports,
    )

Sub-packages, one job each: ``model`` (the mesh model, its validation and queries), ``translate`` (the
model into Envoy resources, bootstraps, ``envoy --mode validate``), ``xds`` (the ADS protocol, snapshots,
node tokens) and ``pki`` (SPIFFE IDs, the CA, SDS secrets, key files). What remains here is the control
plane process (``server``), its status and its commands. See docs/control.md.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envoykit.control.model.loader import LoadedMesh, load_mesh, parse_mesh
    from envoykit.control.model.mesh import Mesh
    from envoykit.control.model.nodes import NodeInfo, mesh_nodes, node_id, parse_node_id
    from envoykit.control.model.ports import remap_ports
    from envoykit.control.model.semantics import check_mesh
    from envoykit.control.server import ControlPlane
    from envoykit.control.translate.bootstrap import bootstrap
    from envoykit.control.translate.translation import Translation, translate
    from envoykit.control.translate.validate import validate_translation
    from envoykit.control.xds.client import AdsClient

# imported on first use, so `envoykit ca ...` and the CA modules do not load the whole control plane
_WHERE = {
    "bootstrap": "translate.bootstrap",
    "AdsClient": "xds.client",
    "LoadedMesh": "model.loader",
    "load_mesh": "model.loader",
    "parse_mesh": "model.loader",
    "Mesh": "model.mesh",
    "NodeInfo": "model.nodes",
    "mesh_nodes": "model.nodes",
    "node_id": "model.nodes",
    "parse_node_id": "model.nodes",
    "remap_ports": "model.ports",
    "check_mesh": "model.semantics",
    "ControlPlane": "server",
    "Translation": "translate.translation",
    "translate": "translate.translation",
    "validate_translation": "translate.validate",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'envoykit.control' has no attribute {name!r}")
    return getattr(importlib.import_module(f"envoykit.control.{module}"), name)


class _Package(types.ModuleType):
    """Keeps ``envoykit.control.translate`` and ``.bootstrap`` the functions of the public API.

    Importing a submodule makes Python set it as an attribute of its package, which would shadow the
    function of the same name for every later ``from envoykit.control import translate``. Those two
    names are never stored, so they always resolve through ``__getattr__`` to the functions; the
    modules stay importable as ``from envoykit.control.translate.translation import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("bootstrap", "translate") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "AdsClient",
    "ControlPlane",
    "LoadedMesh",
    "Mesh",
    "NodeInfo",
    "Translation",
    "bootstrap",
    "check_mesh",
    "load_mesh",
    "mesh_nodes",
    "node_id",
    "parse_mesh",
    "parse_node_id",
    "remap_ports",
    "translate",
    "validate_translation",
]
