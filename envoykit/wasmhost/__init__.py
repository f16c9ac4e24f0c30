"""A Proxy-Wasm host on wasmtime: run a filter's ``.wasm`` in-process, as Envoy would, under pytest.

Public names::

    from envoykit.wasmhost import (
        Host, Plugin, load_plugin, load_module, WasmModule,
        HttpStream, TcpStream, LocalResponse, HttpCall, GrpcCall, HeaderMap, LogRecord,
        Action, LogLevel, Status, BufferType, MapType, StreamType, MetricType, PeerType, AbiVersion,
        WasmHostError, ModuleLoadError, FilterFailure, PluginFailedError, StreamStateError,
        HttpRequest, HttpResponse, Outcome, run_exchange, TcpOutcome, run_tcp_exchange,
    )

A test reads like the request it checks::

    plugin = load_plugin("add_header.wasm", root_id="add_header", configuration="x-hello: world")
    stream = plugin.http_stream()
    action = stream.send_request_headers({":path": "/", ":method": "GET"}, end_of_stream=True)
    assert action == Action.CONTINUE
    stream.send_response_headers({":status": "200"}, end_of_stream=True)
    assert stream.response_headers["x-hello"] == "world"
"""

from envoykit.wasmhost.abi import (
    AbiVersion,
    Action,
    BufferType,
    LogLevel,
    MapType,
    MetricType,
    PeerType,
    Status,
    StreamType,
)
from envoykit.wasmhost.callouts import GrpcCall, HttpCall
from envoykit.wasmhost.errors import (
    FilterFailure,
    ModuleLoadError,
    PluginFailedError,
    StreamStateError,
    WasmHostError,
)
from envoykit.wasmhost.exchange import HttpRequest, HttpResponse, Outcome, run_exchange
from envoykit.wasmhost.headermap import HeaderMap
from envoykit.wasmhost.host import Host, load_plugin
from envoykit.wasmhost.http import HttpStream
from envoykit.wasmhost.module import WasmModule, load_module
from envoykit.wasmhost.plugin import Plugin
from envoykit.wasmhost.tcp import TcpOutcome, TcpStream, run_tcp_exchange
from envoykit.wasmhost.types import LocalResponse, LogRecord

__all__ = [
    "AbiVersion",
    "Action",
    "BufferType",
    "FilterFailure",
    "GrpcCall",
    "HeaderMap",
    "Host",
    "HttpCall",
    "HttpRequest",
    "HttpResponse",
    "HttpStream",
    "LocalResponse",
    "LogLevel",
    "LogRecord",
    "MapType",
    "MetricType",
    "ModuleLoadError",
    "Outcome",
    "PeerType",
    "Plugin",
    "PluginFailedError",
    "Status",
    "StreamStateError",
    "StreamType",
    "TcpOutcome",
    "TcpStream",
    "WasmHostError",
    "WasmModule",
    "load_module",
    "load_plugin",
    "run_exchange",
    "run_tcp_exchange",
]
