"""Context management and extras: ``proxy_set_effective_context``, ``proxy_done``,
``proxy_call_foreign_function``, plus the ``env`` helpers cpp-host always links
(``pthread_equal``, ``emscripten_notify_memory_growth``).

``set_effective_context`` to an unknown id is BAD_ARGUMENT (cpp-host ``exports.cc``).
``proxy_done`` finishes a root context whose ``proxy_on_done`` returned false; outside that it is
NOT_FOUND. Foreign functions are Python callables registered on the :class:`~envoykit.wasmhost.Host`
(Envoy ships ``compress``/``uncompress``, ``declare_property`` ...); an unknown name is NOT_FOUND.
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import Status
from envoykit.wasmhost.hostcalls.table import Table


def proxy_set_effective_context(vm: Any, context_id: int) -> int:
    """``proxy_set_effective_context(context_id) -> status``."""
    ctx = vm.plugin.contexts.get(context_id)
    if ctx is None:
        return Status.BAD_ARGUMENT
    vm.plugin.effective = ctx
    return Status.OK


def proxy_done(vm: Any) -> int:
    """``proxy_done() -> status``."""
    return int(vm.plugin.finish_done())


def proxy_call_foreign_function(
    vm: Any, np: int, ns: int, ap: int, as_: int, ptr_ptr: int, size_ptr: int
) -> int:
    """``proxy_call_foreign_function(name_data, name_size, arguments_data, arguments_size,
    return_results_data **, return_results_size *) -> status``.
    """
    name = vm.read(np, ns).decode(errors="replace")
    args = vm.read(ap, as_)
    fn = vm.plugin.host.foreign_functions.get(name)
    if fn is None:
        return Status.NOT_FOUND
    result = fn(args)
    if isinstance(result, Status):
        return int(result)
    vm.return_bytes(bytes(result), ptr_ptr, size_ptr)
    return Status.OK


def pthread_equal(vm: Any, a: int, b: int) -> int:
    """``env.pthread_equal(a, b) -> a == b (cpp-host registers it for emscripten modules)``."""
    return int(a == b)


def emscripten_notify_memory_growth(vm: Any, index: int) -> None:
    """``env.emscripten_notify_memory_growth(index): a no-op, as in cpp-host``."""
    return None


FUNCTIONS: Table = {
    "proxy_set_effective_context": ("i>i", proxy_set_effective_context),
    "proxy_done": (">i", proxy_done),
    "proxy_call_foreign_function": ("iiiiii>i", proxy_call_foreign_function),
}
ENV_EXTRAS: Table = {
    "pthread_equal": ("ii>i", pthread_equal),
    "emscripten_notify_memory_growth": ("i>", emscripten_notify_memory_growth),
}
