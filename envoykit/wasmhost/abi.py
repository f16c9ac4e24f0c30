"""Proxy-Wasm ABI constants, version detection and the export signatures each version expects.

Numbers come from the spec (proxy-wasm/spec ``abi-versions/v0.2.1/README.md``) and cpp-host's
``include/proxy-wasm/wasm_api_impl.h`` / ``context.h``; where Envoy adds values (the ``FilterHeadersStatus``
codes 2..4 the C++ SDK returns) they are noted.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import wasmtime


class LogLevel(enum.IntEnum):
    """``proxy_log_level_t``: the same numbers as Envoy's spdlog levels (Envoy ``Context::log``)."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class Status(enum.IntEnum):
    """``proxy_status_t`` (cpp-host ``WasmResult``), returned by every host function."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class Action(enum.IntEnum):
    """``proxy_action_t`` for HTTP and TCP callbacks.

    The spec defines CONTINUE and PAUSE; Envoy also honours the C++ SDK's wider
    ``FilterHeadersStatus`` / ``FilterDataStatus`` codes (Envoy ``convertFilterHeadersStatus``).
    """

    CONTINUE = 0
    PAUSE = 1
    STOP_ALL_ITERATION_AND_BUFFER = 3
    STOP_ALL_ITERATION_AND_WATERMARK = 4

    @classmethod
    def of(cls, value: int) -> Action | int:
        """The enum member for ``value``, or the raw integer when it is not one."""
        return _ACTIONS.get(value, value)


_ACTIONS: dict[int, Action] = {int(a): a for a in Action}  # a lookup per callback: no enum call


class BufferType(enum.IntEnum):
    """``proxy_buffer_type_t``."""

    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8  # foreign function arguments


class MapType(enum.IntEnum):
    """``proxy_map_type_t``."""

    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class StreamType(enum.IntEnum):
    """``proxy_stream_type_t`` (ABI 0.2.0+)."""

    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class MetricType(enum.IntEnum):
    """``proxy_metric_type_t``; also the low two bits of every metric id (cpp-host ``wasm.h``)."""

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class PeerType(enum.IntEnum):
    """``proxy_peer_type_t``, passed to the connection-close callbacks."""

    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class AbiVersion(enum.Enum):
    """A Proxy-Wasm ABI version, named by its export marker."""

    V0_1_0 = "0.1.0"
    V0_2_0 = "0.2.0"
    V0_2_1 = "0.2.1"

    @property
    def marker(self) -> str:
        """The export the module must have, e.g. ``proxy_abi_version_0_2_1``."""
        return "proxy_abi_version_" + self.value.replace(".", "_")


class AbiError(Exception):
    """The module is not a Proxy-Wasm module this host (or Envoy) would load."""


def detect_abi_version(exports: Iterable[tuple[str, Any]]) -> AbiVersion:
    """The ABI version from the module's export marker.

    Like cpp-host ``BytecodeUtil::getAbiVersion``: the first *function* export named
    ``proxy_abi_version_X_Y_Z`` with a known version wins.

    Raises:
        AbiError: no known marker ("Missing or unknown Proxy-Wasm ABI version", Envoy's message).
    """
    by_marker = {v.marker: v for v in AbiVersion}
    seen: list[str] = []
    for name, ty in exports:
        if not isinstance(ty, wasmtime.FuncType):
            continue
        if name in by_marker:
            return by_marker[name]
        if name.startswith("proxy_abi_version_"):
            seen.append(name)
    extra = f" (found {', '.join(seen)})" if seen else ""
    raise AbiError(f"Missing or unknown Proxy-Wasm ABI version{extra}")


# Export signatures as (params, results) counts of i32 — every callback of the ABI uses only i32.
_COMMON_EXPORTS: dict[str, tuple[int, int]] = {
    "proxy_on_memory_allocate": (1, 1),
    "malloc": (1, 1),
    "proxy_on_context_create": (2, 0),
    "proxy_on_done": (1, 1),
    "proxy_on_log": (1, 0),
    "proxy_on_delete": (1, 0),
    "proxy_on_vm_start": (2, 1),
    "proxy_on_configure": (2, 1),
    "proxy_validate_configuration": (2, 1),
    "proxy_on_tick": (1, 0),
    "proxy_on_new_connection": (1, 1),
    "proxy_on_downstream_data": (3, 1),
    "proxy_on_upstream_data": (3, 1),
    "proxy_on_downstream_connection_close": (2, 0),
    "proxy_on_upstream_connection_close": (2, 0),
    "proxy_on_request_body": (3, 1),
    "proxy_on_request_trailers": (2, 1),
    "proxy_on_request_metadata": (2, 1),
    "proxy_on_response_body": (3, 1),
    "proxy_on_response_trailers": (2, 1),
    "proxy_on_response_metadata": (2, 1),
    "proxy_on_http_call_response": (5, 0),
    "proxy_on_grpc_receive_initial_metadata": (3, 0),
    "proxy_on_grpc_receive": (3, 0),
    "proxy_on_grpc_receive_trailing_metadata": (3, 0),
    "proxy_on_grpc_close": (3, 0),
    "proxy_on_queue_ready": (2, 0),
    "_initialize": (0, 0),
    "_start": (0, 0),
    "main": (2, 1),
}


def expected_exports(version: AbiVersion) -> dict[str, tuple[int, int]]:
    """Callback name → (number of i32 params, number of i32 results) for ``version``.

    Source: cpp-host ``src/wasm.cc`` ``WasmBase::getFunctions``: 0.1.0 header callbacks take
    (context_id, headers); 0.2.x add ``end_of_stream`` and look up ``proxy_on_foreign_function``.
    """
    out = dict(_COMMON_EXPORTS)
    if version is AbiVersion.V0_1_0:
        out["proxy_on_request_headers"] = (2, 1)
        out["proxy_on_response_headers"] = (2, 1)
    else:
        out["proxy_on_request_headers"] = (3, 1)
        out["proxy_on_response_headers"] = (3, 1)
        out["proxy_on_foreign_function"] = (3, 0)
    return out


def check_export_signatures(version: AbiVersion, exports: Iterable[tuple[str, Any]]) -> None:
    """Refuse a module whose callbacks do not have the signatures of its ABI version.

    Envoy's V8 runtime fails the VM with "Bad function signature for: <name>" (cpp-host
    ``src/v8/v8.cc`` ``getModuleFunctionImpl``); this host does the same, before anything runs.

    Raises:
        AbiError: a callback export has the wrong parameter or result types.
    """
    want = expected_exports(version)
    for name, ty in exports:
        if name not in want or not isinstance(ty, wasmtime.FuncType):
            continue
        n_params, n_results = want[name]
        i32 = wasmtime.ValType.i32()
        params_ok = len(ty.params) == n_params and all(p == i32 for p in ty.params)
        results_ok = len(ty.results) == n_results and all(r == i32 for r in ty.results)
        if not (params_ok and results_ok):
            got = f"({', '.join(map(str, ty.params))}) -> ({', '.join(map(str, ty.results))})"
            raise AbiError(
                f"Bad function signature for: {name} (ABI {version.value} expects "
                f"{n_params} i32 params and {n_results} i32 results, module has {got})"
            )
