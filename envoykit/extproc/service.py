"""The gRPC servicer for ``envoy.service.ext_proc.v3.ExternalProcessor/Process`` (grpc.aio).

Which processors run on a stream:

* the gRPC request metadata ``x-envoykit-processors: name1,name2`` (set per Envoy filter with
  ``grpc_service.initial_metadata``) picks them by name, in that order;
* otherwise streams in ``observability_mode`` run the *observer* processors (telemetry) and
  blocking streams run the others.

The first message of the stream decides; the choice holds for the whole stream. In observability
mode the stream is closed as soon as every processor called ``Exchange.finish`` (Envoy would
otherwise hold it open for ``deferred_close_timeout`` after the exchange ends).
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from prometheus_client import Counter

from envoykit.core.extproc import PROCESSORS_HEADER
from envoykit.core.logs import get_logger
from envoykit.extproc.exchange import Exchange
from envoykit.extproc.processor import Chain, Processor
from envoykit.extproc.stream import StreamMachine

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"

STREAMS = Counter(
    "envoykit_extproc_streams",
    "ext_proc streams (one per HTTP exchange) by mode: observability or blocking.",
    ["mode"],
)
UNKNOWN_SELECTION = Counter(
    "envoykit_extproc_unknown_processor_selections",
    "Streams whose x-envoykit-processors named a processor that is not loaded (answered with no processor).",
)


class ExternalProcessorService(pb_grpc.ExternalProcessorServicer):
    """Serves ``Process`` streams with a chain of processors.

    Args:
        processors: every loaded processor in declared order.
    """

    def __init__(self, processors: list[Processor]) -> None:
        self.chain = Chain(processors)
        self.observers = Chain([p for p in processors if p.observer])
        self.blockers = Chain([p for p in processors if not p.observer])
        self._selected: dict[str, Chain] = {}
        self._log = get_logger("extproc")
        self._streams_obs = STREAMS.labels("observability")
        self._streams_block = STREAMS.labels("blocking")

    def _chain_for(self, selection: str | None, observability: bool) -> Chain:
        if selection is None:
            return self.observers if observability else self.blockers
        chain = self._selected.get(selection)
        if chain is None:
            names = [n.strip() for n in selection.split(",") if n.strip()]
            try:
                chain = self.chain.select(names)
            except KeyError as exc:
                UNKNOWN_SELECTION.inc()
                self._log.error("unknown processor selected", processor=str(exc), selection=selection)
                chain = Chain([])
            self._selected[selection] = chain
        return chain

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """One HTTP exchange: read messages until Envoy half-closes; answer each one it waits for."""
        selection: str | None = None
        md = context.invocation_metadata()
        grpc_md: dict[str, str] = {}
        if md:
            for item in md:
                if isinstance(item.value, str):
                    grpc_md[item.key] = item.value
            selection = grpc_md.get(PROCESSORS_HEADER)
        ex = Exchange(grpc_md)
        ex.send = context.write
        machine: StreamMachine | None = None
        try:
            while True:
                req = await context.read()
                if req is grpc.aio.EOF:
                    break
                if machine is None:
                    obs = req.observability_mode
                    (self._streams_obs if obs else self._streams_block).inc()
                    machine = StreamMachine(self._chain_for(selection, obs), ex, self._log)
                resp = await machine.handle(req)
                if resp is not None:
                    await context.write(resp)
                elif req.observability_mode and len(ex.finished) >= len(machine.chain):
                    break  # every processor has what it needs: close now, not after deferred_close
        finally:
            if machine is not None:
                machine.end()


def add_to_server(server: Any, service: ExternalProcessorService) -> None:
    """Register ``service`` on an envoykit :class:`~envoykit.core.AioGrpcServer`."""
    server.add_service(pb_grpc.add_ExternalProcessorServicer_to_server, service, SERVICE_NAME)


__all__ = ["SERVICE_NAME", "ExternalProcessorService", "add_to_server"]
