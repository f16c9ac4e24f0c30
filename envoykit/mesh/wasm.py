"""Build the Wasm modules a mesh names before Envoy loads them.

A Wasm plugin in mesh.yaml names a ``.wasm`` file. When that file is missing and its name (without a
``-<digest>`` suffix) is one of the example filters in ``examples/wasm/`` (``add_header.wasm``), the
runner builds the example from source and puts the module at that path, so a fresh clone runs
``make up`` without a separate build step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from envoykit.control.model.loader import LoadedMesh
from envoykit.core import ConfigError, get_logger

_log = get_logger("mesh")


def ensure_wasm_modules(loaded: LoadedMesh) -> list[Path]:
    """Build every missing example module the validated mesh names; return the paths built.

    Raises:
        ConfigError: a module is missing and is no example, or its build failed (compiler output in
            the message); it names mesh.yaml, the line and the field.
    """
    from envoykit.wasmbuild.build import BuildError, build_example, list_examples  # wasmtime: load on use

    mesh_path = loaded.path
    built = []
    for i, plugin in enumerate(loaded.mesh.extensions.wasm):
        path = Path(plugin.file)
        path = path if path.is_absolute() else loaded.base_dir / path
        if path.exists():
            continue
        field = f"extensions.wasm.{i}.file"
        line = loaded.doc.line_of(["extensions", "wasm", i, "file"]) if loaded.doc else None
        name = path.stem
        if name not in list_examples():
            raise ConfigError(
                f"{path} does not exist and is not an example filter ({', '.join(list_examples())})",
                file=str(mesh_path),
                line=line,
                field=field,
            )
        try:
            module = build_example(name)
        except BuildError as exc:
            raise ConfigError(f"building {name}: {exc}", file=str(mesh_path), field=field) from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        # copy then rename: a runner starting beside this one never reads half a module
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(module, tmp)
        os.replace(tmp, path)
        _log.info("built wasm module", example=name, path=str(path))
        built.append(path)
    return built
