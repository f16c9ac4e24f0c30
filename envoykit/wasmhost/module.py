"""Compiling Proxy-Wasm modules, with a compiled-module cache, and checking their ABI.

One wasmtime :class:`~wasmtime.Engine` serves the whole process (fuel metering on, so loops can be
stopped). Compiled modules are kept in memory by content hash and on disk as wasmtime serialized
artifacts, so a test session compiles each ``.wasm`` once and later sessions not at all.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from envoykit.wasmhost.abi import AbiVersion, check_export_signatures, detect_abi_version
from envoykit.wasmhost.errors import AbiError, ModuleLoadError

_engine: wasmtime.Engine | None = None
_engine_lock = threading.Lock()
_memory_cache: dict[str, WasmModule] = {}


def engine() -> wasmtime.Engine:
    """The process-wide engine: fuel metering enabled (the loop budget of every callback), and
    linear memories that never move (a 32-bit memory fits its 4 GiB reservation), so the host
    keeps a memory's base address instead of asking wasmtime for it on every access."""
    global _engine
    with _engine_lock:
        if _engine is None:
            cfg = wasmtime.Config()
            cfg.consume_fuel = True
            cfg.memory_may_move = False
            _engine = wasmtime.Engine(cfg)
        return _engine


def default_cache_dir() -> Path:
    """``$ENVOYKIT_WASM_CACHE``, else ``$XDG_CACHE_HOME/envoykit/wasm`` (``~/.cache/envoykit/wasm``)."""
    env = os.environ.get("ENVOYKIT_WASM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "envoykit" / "wasm"


@dataclass(frozen=True)
class WasmModule:
    """A compiled, ABI-checked Proxy-Wasm module.

    Attributes:
        module: the wasmtime module (shared by every plugin instance made from it).
        abi_version: from the export marker (:func:`~envoykit.wasmhost.abi.detect_abi_version`).
        sha256: hex digest of the original bytes (the cache key).
        name: file name or ``"<bytes>"``, for messages.
        from_cache: ``"memory"``, ``"disk"`` or ``""`` (compiled now).
    """

    module: wasmtime.Module
    abi_version: AbiVersion
    sha256: str
    name: str
    from_cache: str = ""
    exports: frozenset[str] = field(default_factory=frozenset)


def _cache_key(digest: str) -> str:
    # The serialized format is tied to the wasmtime build and engine settings.
    version = getattr(wasmtime, "__version__", "") or _wasmtime_version()
    return hashlib.sha256(f"{digest}|wasmtime-{version}|fuel|fixed-memory".encode()).hexdigest()


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def load_module(
    source: str | Path | bytes,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> WasmModule:
    """Compile ``source`` (a path to ``.wasm``/``.wat`` or the bytes/WAT text) and check its ABI.

    Args:
        source: a file path, or module bytes (binary Wasm, or WAT text as bytes).
        cache_dir: where serialized compiled modules are kept (default :func:`default_cache_dir`).
        use_cache: ``False`` compiles from scratch and leaves both caches untouched (benchmarks).

    Raises:
        ModuleLoadError: unreadable file, invalid Wasm/WAT, or an ABI Envoy would refuse
            (its ``__cause__`` is an :class:`~envoykit.wasmhost.abi.AbiError` then).
    """
    if isinstance(source, bytes):
        data, name = source, "<bytes>"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModuleLoadError(f"cannot read Wasm module {path}: {exc}") from exc
        name = path.name
    digest = hashlib.sha256(data).hexdigest()
    if use_cache and digest in _memory_cache:
        cached = _memory_cache[digest]
        return WasmModule(cached.module, cached.abi_version, digest, name, "memory", cached.exports)

    eng = engine()
    module: wasmtime.Module | None = None
    origin = ""
    disk = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    artifact = disk / f"{_cache_key(digest)}.cwasm"
    if use_cache and artifact.exists():
        try:
            # Read, not mmap (deserialize_file): a file rewritten in place under a mapping would
            # crash the process with SIGBUS.
            module = wasmtime.Module.deserialize(eng, artifact.read_bytes())
            origin = "disk"
        except (wasmtime.WasmtimeError, OSError):
            module = None  # stale or corrupt artifact: recompile below
    if module is None:
        try:
            module = wasmtime.Module(eng, data)
        except wasmtime.WasmtimeError as exc:
            raise ModuleLoadError(f"{name} is not a valid Wasm module: {exc}") from exc
        if use_cache:
            _write_artifact(artifact, module)

    exports = [(e.name, e.type) for e in module.exports]
    try:
        version = detect_abi_version(exports)
        check_export_signatures(version, exports)
    except AbiError as exc:
        raise ModuleLoadError(f"{name}: {exc}") from exc
    loaded = WasmModule(module, version, digest, name, origin, frozenset(n for n, _ in exports))
    if use_cache:
        _memory_cache[digest] = loaded
    return loaded


def _write_artifact(artifact: Path, module: wasmtime.Module) -> None:
    try:
        artifact.parent.mkdir(parents=True, exist_ok=True)
        tmp = artifact.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(module.serialize())
        os.replace(tmp, artifact)  # atomic: parallel test workers never see half a file
    except OSError:
        pass  # a read-only cache only costs compile time


def clear_memory_cache() -> None:
    """Forget the in-process compiled modules (the disk cache stays)."""
    _memory_cache.clear()
