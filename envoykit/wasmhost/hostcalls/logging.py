"""Logging and time: ``proxy_log``, ``proxy_get_log_level``, ``proxy_get_current_time_nanoseconds``,
``proxy_set_tick_period_milliseconds``.

Envoy ``Context::log`` maps the level straight to spdlog and drops what is below the ``wasm``
logger's level; ``getLogLevel`` returns that level. A level above CRITICAL (5) is refused with
BAD_ARGUMENT (cpp-host ``exports.cc`` ``log``).
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import LogLevel, Status
from envoykit.wasmhost.errors import OutOfBounds
from envoykit.wasmhost.hostcalls.table import Table

# Plain names for the enum members used per request: an attribute of an Enum class goes
# through EnumType.__getattr__ on Python 3.11, which costs more than the rest of the line.
_OK = Status.OK
_BAD_ARGUMENT = Status.BAD_ARGUMENT
_CRITICAL = int(LogLevel.CRITICAL)


def proxy_log(vm: Any, level: int, ptr: int, size: int) -> int:
    """``proxy_log(log_level, message_data, message_size) -> status``."""
    if level < 0 or level > _CRITICAL:
        return _BAD_ARGUMENT
    if level < vm.plugin.host.log_level:
        # cpp-host reads the message before Envoy's logger drops it: VM.check, inline (u32s are
        # never negative; most debug lines end here)
        end = ptr + size
        if end > vm._mem_len and end > vm._base()[1]:
            raise OutOfBounds
        return _OK
    vm.plugin.record_log(LogLevel(level), vm.read(ptr, size))
    return _OK


def proxy_get_log_level(vm: Any, ret_ptr: int) -> int:
    """``proxy_get_log_level(return_log_level *u32) -> status``."""
    vm.write_u32(ret_ptr, int(vm.plugin.host.log_level))
    return _OK


def proxy_get_current_time_nanoseconds(vm: Any, ret_ptr: int) -> int:
    """``proxy_get_current_time_nanoseconds(return_time *u64) -> status``."""
    vm.write_u64(ret_ptr, vm.plugin.host.clock.wall_ns)
    return _OK


def proxy_set_tick_period_milliseconds(vm: Any, period_ms: int) -> int:
    # Envoy: the tick belongs to the root context of the calling context; 0 stops it.
    """``proxy_set_tick_period_milliseconds(tick_period) -> status``."""
    vm.plugin.set_tick_period(period_ms)
    return _OK


FUNCTIONS: Table = {
    "proxy_log": ("iii>i", proxy_log),
    "proxy_get_current_time_nanoseconds": ("i>i", proxy_get_current_time_nanoseconds),
    "proxy_set_tick_period_milliseconds": ("i>i", proxy_set_tick_period_milliseconds),
}
ABI_0_2_1: Table = {"proxy_get_log_level": ("i>i", proxy_get_log_level)}
