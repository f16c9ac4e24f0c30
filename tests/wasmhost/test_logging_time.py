"""proxy_log, log level, clock and ticks (examples/wasm/wat/logging.wat)."""

from __future__ import annotations

from envoykit.wasmhost import Host, LogLevel, Status, load_plugin
from envoykit.wasmhost.state import DEFAULT_EPOCH_NS
from tests.wasmhost.conftest import WAT, slot


def test_levels_below_the_host_level_are_dropped(wat) -> None:
    plugin = wat("logging")
    assert plugin.log_messages() == ["info", "warn", "error", "critical"]
    assert [r.level for r in plugin.logs] == [LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR, LogLevel.CRITICAL]
    assert {r.context_id for r in plugin.logs} == {1}


def test_trace_level_keeps_everything_and_is_reported_to_the_module() -> None:
    plugin = load_plugin(WAT / "logging.wat", log_level=LogLevel.TRACE)
    assert plugin.log_messages() == ["trace", "debug", "info", "warn", "error", "critical"]
    assert slot(plugin, 2) == Status.OK
    assert slot(plugin, 3) == LogLevel.TRACE


def test_bad_level_and_bad_pointer(wat) -> None:
    plugin = wat("logging")
    assert slot(plugin, 0) == Status.BAD_ARGUMENT
    assert slot(plugin, 1) == Status.INVALID_MEMORY_ACCESS


def test_clock_is_controllable(wasm_host: Host, wat) -> None:
    plugin = wat("logging")
    assert slot(plugin, 4) == Status.OK
    assert slot(plugin, 5) | (slot(plugin, 6) << 32) == DEFAULT_EPOCH_NS
    assert wasm_host.clock.wall_ns == DEFAULT_EPOCH_NS


def test_ticks_fire_as_the_clock_moves(wasm_host: Host, wat) -> None:
    plugin = wat("logging")
    assert slot(plugin, 7) == Status.OK
    assert plugin.tick_period_ms == 100
    assert wasm_host.advance(99) == 0
    assert wasm_host.advance(1) == 1
    assert wasm_host.advance(250) == 2
    assert slot(plugin, 8) == 3
    assert plugin.log_messages()[-3:] == ["tick", "tick", "tick"]
