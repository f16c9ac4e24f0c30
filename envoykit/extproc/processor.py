"""The processor API: classes or decorated functions, one handler per phase.

Two ways to write one::

    from envoykit.extproc import Processor, processor

    class AddUser(Processor):
        name = "add-user"
        def on_request_headers(self, ex):
            ex.set_header("x-user", ex.headers.get("authorization", "anonymous"))

    deny = processor("deny-admin", failure_mode="reject")

    @deny.on_request_headers
    async def check(ex):
        if ex.headers.get(":path", "").startswith("/admin"):
            ex.respond(403, "no")

Handlers may be plain or ``async`` functions. A handler that raises does not end the stream: its
edits of that phase are dropped, it is logged and counted, and the exchange goes on
(``failure_mode="continue"``) or gets an immediate 500 (``failure_mode="reject"``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from envoykit.core.errors import ConfigError
from envoykit.extproc.exchange import Exchange, Phase

FailureMode = Literal["continue", "reject"]
Handler = Callable[[Exchange], Awaitable[None] | None]
_PHASE_METHODS = {p: f"on_{p.value}" for p in Phase}


class Processor:
    """Base class: override any of ``on_request_headers``, ``on_request_body``,
    ``on_request_trailers``, ``on_response_headers``, ``on_response_body``, ``on_response_trailers``.

    Class attributes:
        name: shown in logs and metrics, and used to select processors per Envoy filter
            (gRPC metadata ``x-envoykit-processors``); defaults to the class name.
        failure_mode: ``"continue"`` (drop this processor's edits, go on) or ``"reject"``
            (answer 500 now) when a handler raises.
        observer: True for processors that only watch (like telemetry): by default they run on
            streams in ``observability_mode`` and the others on blocking streams.
    """

    name: str = ""
    failure_mode: FailureMode = "continue"
    observer: bool = False

    def on_request_headers(self, ex: Exchange) -> Awaitable[None] | None:
        """Request headers are in ``ex.headers``."""

    def on_request_body(self, ex: Exchange) -> Awaitable[None] | None:
        """A request body chunk (or the whole body in BUFFERED mode) is in ``ex.body``."""

    def on_request_trailers(self, ex: Exchange) -> Awaitable[None] | None:
        """Request trailers are in ``ex.headers``."""

    def on_response_headers(self, ex: Exchange) -> Awaitable[None] | None:
        """Response headers are in ``ex.headers`` (``:status`` included)."""

    def on_response_body(self, ex: Exchange) -> Awaitable[None] | None:
        """A response body chunk (or the whole body in BUFFERED mode) is in ``ex.body``."""

    def on_response_trailers(self, ex: Exchange) -> Awaitable[None] | None:
        """Response trailers are in ``ex.headers``."""

    def on_stream_end(self, ex: Exchange) -> None:
        """Called once when the ext_proc stream ends, however it ends (plain function only)."""


class FunctionProcessor(Processor):
    """A processor assembled from decorated functions; made by :func:`processor`."""

    def __init__(self, name: str, failure_mode: FailureMode = "continue", observer: bool = False) -> None:
        self.name = name
        self.failure_mode = failure_mode
        self.observer = observer

    def _register(self, phase: Phase) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            setattr(self, _PHASE_METHODS[phase], fn)
            return fn

        return deco

    def on_request_headers(self, fn: Any = None) -> Any:  # type: ignore[override]
        """Decorator: run ``fn(ex)`` on request headers."""
        return self._register(Phase.REQUEST_HEADERS)(fn)

    def on_request_body(self, fn: Any = None) -> Any:  # type: ignore[override]
        """Decorator: run ``fn(ex)`` on each request body message."""
        return self._register(Phase.REQUEST_BODY)(fn)

    def on_request_trailers(self, fn: Any = None) -> Any:  # type: ignore[override]
        """Decorator: run ``fn(ex)`` on request trailers."""
        return self._register(Phase.REQUEST_TRAILERS)(fn)

    def on_response_headers(self, fn: Any = None) -> Any:  # type: ignore[override]
        """Decorator: run ``fn(ex)`` on response headers."""
        return self._register(Phase.RESPONSE_HEADERS)(fn)

    def on_response_body(self, fn: Any = None) -> Any:  # type: ignore[override]
        """Decorator: run ``fn(ex)`` on each response body message."""
        return self._register(Phase.RESPONSE_BODY)(fn)

    def on_response_trailers(self, fn: Any = None) -> Any:  # type: ignore[override]
        """Decorator: run ``fn(ex)`` on response trailers."""
        return self._register(Phase.RESPONSE_TRAILERS)(fn)


def processor(
    name: str, failure_mode: FailureMode = "continue", *, observer: bool = False
) -> FunctionProcessor:
    """A new :class:`FunctionProcessor`; decorate functions with its ``on_<phase>`` methods."""
    return FunctionProcessor(name, failure_mode, observer)


@dataclass(frozen=True, slots=True)
class Step:
    """One processor's handler for one phase, resolved at load time."""

    processor: Processor
    name: str
    fn: Callable[[Exchange], Any]
    is_async: bool
    failure_mode: FailureMode


def _handler(p: Processor, phase: Phase) -> Callable[[Exchange], Any] | None:
    attr = _PHASE_METHODS[phase]
    if attr in vars(p):  # FunctionProcessor: a decorated function stored on the instance
        fn: Any = vars(p)[attr]
        return fn  # type: ignore[no-any-return]
    if isinstance(p, FunctionProcessor):
        return None
    if getattr(type(p), attr) is getattr(Processor, attr):
        return None
    return getattr(p, attr)  # type: ignore[no-any-return]


class Chain:
    """Processors in their declared order, compiled into one list of steps per phase.

    Args:
        processors: the processors, first runs first.

    Raises:
        ConfigError: a processor has a bad ``failure_mode`` or two share a name.
    """

    def __init__(self, processors: Iterable[Processor]) -> None:
        self.processors = list(processors)
        seen: set[str] = set()
        for p in self.processors:
            if not p.name:
                p.name = type(p).__name__
            if p.name in seen:
                raise ConfigError(f"two processors are named {p.name!r}", field="processor")
            seen.add(p.name)
            if p.failure_mode not in ("continue", "reject"):
                raise ConfigError(
                    f"failure_mode must be 'continue' or 'reject', not {p.failure_mode!r}",
                    field=f"processor.{p.name}.failure_mode",
                )
        self.steps: dict[Phase, list[Step]] = {}
        for phase in Phase:
            steps = []
            for p in self.processors:
                fn = _handler(p, phase)
                if fn is not None:
                    steps.append(Step(p, p.name, fn, inspect.iscoroutinefunction(fn), p.failure_mode))
            self.steps[phase] = steps
        self.enders = [p for p in self.processors if type(p).on_stream_end is not Processor.on_stream_end]

    def select(self, names: Iterable[str]) -> Chain:
        """A chain of only the processors named, in the order given.

        Raises:
            KeyError: a name is not loaded.
        """
        by_name = {p.name: p for p in self.processors}
        return Chain([by_name[n] for n in names])

    def handles(self, phase: Phase) -> bool:
        """True when some processor has a handler for ``phase``."""
        return bool(self.steps[phase])

    def __len__(self) -> int:
        return len(self.processors)


def load_processors(spec: str) -> list[Processor]:
    """Import ``module.path:object`` and return the processors it names.

    ``object`` may be a :class:`Processor` instance, a Processor subclass (instantiated without
    arguments), or a list/tuple of either.

    Raises:
        ConfigError: the module cannot be imported, the object is missing or is not a processor.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'module.path:object', got {spec!r}", field="processor")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", field="processor") from exc
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ConfigError(f"{module_name!r} has no {attr!r}", field="processor") from exc
    items = obj if isinstance(obj, list | tuple) else [obj]
    out: list[Processor] = []
    for item in items:
        if inspect.isclass(item) and issubclass(item, Processor):
            item = item()
        if not isinstance(item, Processor):
            raise ConfigError(f"{spec!r} is a {type(item).__name__}, not a Processor", field="processor")
        out.append(item)
    return out
