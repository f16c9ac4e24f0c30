"""A TCP connection through a network filter (examples/wasm/wat/tcp.wat)."""

from __future__ import annotations

from envoykit.wasmhost import Action, PeerType, Status
from tests.wasmhost.conftest import slot


def test_data_is_held_until_the_filter_continues_then_edited(wat) -> None:
    plugin = wat("tcp")
    conn = plugin.tcp_stream()
    assert conn.connect() == Action.CONTINUE
    assert slot(plugin, 0) == conn.id == 2
    assert conn.send_downstream_data("hel") == Action.PAUSE
    assert conn.upstream_data == b""
    assert conn.send_downstream_data("lo\n") == Action.CONTINUE
    assert (slot(plugin, 1), slot(plugin, 2), slot(plugin, 3)) == (2, 6, Status.OK)  # saw all 6 bytes
    assert conn.upstream_data == b"hello\n!"
    assert conn.send_upstream_data("pong") == Action.CONTINUE
    assert conn.downstream_data == b"pong"


def test_close_order_is_envoys(wat) -> None:
    plugin = wat("tcp")
    conn = plugin.tcp_stream()
    conn.send_downstream_data("x\n")
    conn.send_upstream_data("bye", end_of_stream=True)  # upstream end of stream closes that side
    assert (slot(plugin, 4), slot(plugin, 5)) == (3, 1)
    assert slot(plugin, 8) == PeerType.UNKNOWN and slot(plugin, 9) == 1
    assert slot(plugin, 10) == 0 and not conn.done  # the context lives until the client closes
    conn.close_downstream(PeerType.REMOTE)
    assert slot(plugin, 6) == PeerType.REMOTE
    # Envoy onCloseTCP: on_done, on_log, on_delete
    assert (slot(plugin, 7), slot(plugin, 10), slot(plugin, 11), slot(plugin, 12)) == (2, 3, 4, 5)
    assert conn.done and conn.id not in plugin.contexts


def test_client_close_ends_the_context_at_once(wat) -> None:
    plugin = wat("tcp")
    conn = plugin.tcp_stream()
    conn.connect()
    conn.close_downstream(PeerType.LOCAL)
    assert slot(plugin, 6) == PeerType.LOCAL
    assert (slot(plugin, 7), slot(plugin, 10), slot(plugin, 11), slot(plugin, 12)) == (1, 2, 3, 4)
    assert slot(plugin, 9) == 0  # no upstream close callback
