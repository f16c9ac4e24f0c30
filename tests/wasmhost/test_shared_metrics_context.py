"""Shared data and queues, metrics, foreign functions and contexts (shared/metrics/context.wat)."""

from __future__ import annotations

from envoykit.wasmhost import Host, MetricType, Status
from tests.wasmhost.conftest import WAT, slot


def test_shared_data_cas(wat, wasm_host: Host) -> None:
    plugin = wat("shared")
    assert (slot(plugin, 0), slot(plugin, 1)) == (Status.OK, Status.OK)
    assert slot(plugin, 2) > 0
    assert slot(plugin, 3) == Status.CAS_MISMATCH
    assert slot(plugin, 4) == Status.OK
    assert slot(plugin, 5) == Status.NOT_FOUND
    assert wasm_host.shared_data.items("") == {"k": b"v2"}


def test_shared_data_is_shared_between_plugins_of_one_vm_id(wasm_host: Host) -> None:
    a = wasm_host.load(WAT / "shared.wat", vm_id="same")
    b = wasm_host.load(WAT / "shared.wat", vm_id="same")
    assert slot(a, 0) == Status.OK and slot(b, 0) == Status.OK
    assert slot(b, 2) > slot(a, 2)  # the CAS counter is host-wide


def test_shared_queue(wat) -> None:
    plugin = wat("shared")
    token = slot(plugin, 7)
    assert slot(plugin, 6) == Status.OK and token > 0
    assert (slot(plugin, 8), slot(plugin, 9)) == (Status.OK, token)  # resolve with own vm_id
    assert slot(plugin, 10) == Status.NOT_FOUND  # other vm id
    assert slot(plugin, 11) == Status.EMPTY
    assert slot(plugin, 12) == Status.NOT_FOUND  # unknown token
    plugin.http_stream().send_request_headers({":path": "/"}, end_of_stream=True)
    assert slot(plugin, 13) == Status.OK
    assert (slot(plugin, 14), slot(plugin, 15)) == (token, Status.OK)  # on_queue_ready ran after the call
    assert plugin.vm.read(slot(plugin, 16), slot(plugin, 17)) == b"item"


def test_metrics_rules(wat, wasm_host: Host) -> None:
    plugin = wat("metrics")
    c, g, h = slot(plugin, 1), slot(plugin, 2), slot(plugin, 3)
    assert (c & 3, g & 3, h & 3) == (MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM)
    assert (c, g, h) == (4, 5, 6)
    assert slot(plugin, 4) == Status.BAD_ARGUMENT
    assert (slot(plugin, 5), slot(plugin, 6)) == (Status.OK, Status.BAD_ARGUMENT)
    assert (slot(plugin, 7), slot(plugin, 8), slot(plugin, 9)) == (Status.OK, Status.OK, Status.BAD_ARGUMENT)
    assert (slot(plugin, 10), slot(plugin, 11)) == (Status.OK, Status.OK)
    assert (slot(plugin, 12), slot(plugin, 13)) == (Status.OK, 7)
    assert (slot(plugin, 14), slot(plugin, 15)) == (Status.OK, 7)
    assert slot(plugin, 16) == Status.BAD_ARGUMENT
    assert slot(plugin, 17) == Status.NOT_FOUND
    assert slot(plugin, 18) == Status.OK
    assert (wasm_host.metric("requests"), wasm_host.metric("active"), wasm_host.histogram("latency")) == (
        7,
        7,
        [42],
    )


def test_foreign_functions_effective_context_and_deferred_done(wasm_host: Host) -> None:
    wasm_host.register_foreign_function("reverse", lambda data: data[::-1])
    plugin = wasm_host.load(WAT / "context.wat")
    assert slot(plugin, 0) == Status.OK
    assert plugin.vm.read(slot(plugin, 1), slot(plugin, 2)) == b"cba"
    assert slot(plugin, 3) == Status.NOT_FOUND
    assert slot(plugin, 4) == Status.BAD_ARGUMENT
    assert slot(plugin, 5) == Status.NOT_FOUND
    plugin.call_foreign_function(7, b"args")
    assert slot(plugin, 6) == 7
    assert plugin.vm.read(slot(plugin, 8), slot(plugin, 9)) == b"args"
    plugin.close()  # on_done returns false: on_delete waits for proxy_done
    assert slot(plugin, 11) == 1 and slot(plugin, 13) == 0 and not plugin.closed
    plugin.tick()  # on_tick calls proxy_done
    assert slot(plugin, 12) == Status.OK
    assert slot(plugin, 13) == 1 and plugin.closed
