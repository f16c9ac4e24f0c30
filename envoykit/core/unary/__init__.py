"""The lean unary gRPC server (see :mod:`envoykit.core.unary.server`).

Public names::

    from envoykit.core.unary import (
        UnaryServer, UnaryMethod, Limits, GrpcStatusError, StatusCode,
        serve_unary_forever,
    )
"""

from envoykit.core.unary.protocol import Limits, UnaryMethod
from envoykit.core.unary.server import UnaryServer, new_event_loop, serve_unary_forever
from envoykit.core.unary.wire import GrpcStatusError, StatusCode

__all__ = [
    "GrpcStatusError",
    "Limits",
    "StatusCode",
    "UnaryMethod",
    "UnaryServer",
    "new_event_loop",
    "serve_unary_forever",
]
