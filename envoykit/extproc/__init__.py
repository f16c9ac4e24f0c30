"""envoykit.extproc: Envoy's ext_proc (``envoy.service.ext_proc.v3.ExternalProcessor``) in Python.

Public names::

    from envoykit.extproc import (
        Processor, processor, Exchange, Phase, BodyMode, Headers,
        Telemetry, ExternalProcessorService, build_server, serve,
    )

Write processors with :class:`Processor` or :func:`processor`; run them with
``envoykit extproc serve --processor module.path:object``. See docs/extproc.md.
"""

from envoykit.core.extproc import RESPONSE_ATTRIBUTES
from envoykit.extproc.exchange import BodyMode, Exchange, Phase
from envoykit.extproc.headers import Headers
from envoykit.extproc.processor import (
    Chain,
    FailureMode,
    FunctionProcessor,
    Processor,
    load_processors,
    processor,
)
from envoykit.extproc.server import build_server, serve
from envoykit.extproc.service import ExternalProcessorService
from envoykit.extproc.telemetry import LABELS, Telemetry

__all__ = [
    "LABELS",
    "RESPONSE_ATTRIBUTES",
    "BodyMode",
    "Chain",
    "Exchange",
    "ExternalProcessorService",
    "FailureMode",
    "FunctionProcessor",
    "Headers",
    "Phase",
    "Processor",
    "Telemetry",
    "build_server",
    "load_processors",
    "processor",
    "serve",
]
