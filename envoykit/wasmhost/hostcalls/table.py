"""The shape of a family's host-function table, shared by the family modules and the linker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: An implementation: takes the :class:`~envoykit.wasmhost.vm.VM` first, then the raw wasm arguments.
HostFn = Callable[..., Any]
#: import name → (signature ``"params>results"``, implementation); ``i`` is i32 and ``I`` i64.
Table = dict[str, tuple[str, HostFn]]
