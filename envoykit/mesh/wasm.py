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

from envoykit.core import ConfigError, get_logger, load_yaml_file

_log = get_logger("mesh")


def ensure_wasm_modules(mesh_path: Path) -> list[Path]:
    """Build every missing example module mesh.yaml names; return the paths built.

    Raises:
        ConfigError: a module is missing and is no example, or its build failed (compiler output in
            the message).
    """
    doc = load_yaml_file(mesh_path)
    plugins = ((doc.data or {}).get("extensions") or {}).get("wasm") or []
    built = []
    for i, plugin in enumerate(plugins):
        file = plugin.get("file") if isinstance(plugin, dict) else None
        if not file:
            continue  # the model's validation reports it
        path = Path(file) if Path(file).is_absolute() else mesh_path.absolute().parent / file
        if path.exists():
            continue
        from envoykit.wasmbuild.build import BuildError, build_example, list_examples

        name = path.stem
        if name not in list_examples():
            raise ConfigError(
                f"{path} does not exist and is not an example filter ({', '.join(list_examples())})",
                file=str(mesh_path),
                line=doc.line_of(["extensions", "wasm", i, "file"]),
                field=f"extensions.wasm.{i}.file",
            )
        try:
            module = build_example(name)
        except BuildError as exc:
            raise ConfigError(
                f"building {name}: {exc}", file=str(mesh_path), field=f"extensions.wasm.{i}.file"
            ) from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        # copy then rename: a runner starting beside this one never reads half a module
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(module, tmp)
        os.replace(tmp, path)
        _log.info("built wasm module", example=name, path=str(path))
        built.append(path)
    return built
