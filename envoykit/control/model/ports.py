"""Moving a mesh to other ports: the runner and the tests run the demo mesh on free ports.

:func:`remap_ports` returns a copy of a mesh with the port of every :class:`~envoykit.control.model.types.Address`
in it replaced (control plane, extension servers, apps, sidecars, gateways, admin ports, egress
addresses). Equal ports map to the same new port, so two fields naming one address still agree.
Service ports (``Service.port``, the port in cluster names and Host headers) and external hosts'
``port`` are names, not sockets, and are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from envoykit.control.model.types import Address
from envoykit.core.net import free_port

M = TypeVar("M", bound=BaseModel)


def remap_ports(
    model: M, mapping: dict[int, int] | None = None, new_port: Callable[[], int] = free_port
) -> M:
    """A copy of ``model`` (a Mesh or any part of it) with every Address's port moved.

    Args:
        model: the model to copy; it is not changed.
        mapping: old port → new port; filled in as ports are met (pass one in to share it or to force
            some ports).
        new_port: where new ports come from (a free loopback port by default).

    Returns:
        the copy, of the same type.
    """
    table = {} if mapping is None else mapping

    def walk(value: Any) -> Any:
        if isinstance(value, Address):
            if value.port not in table:
                table[value.port] = new_port()
            return value.model_copy(update={"port": table[value.port]})
        if isinstance(value, BaseModel):
            return value.model_copy(
                update={name: walk(getattr(value, name)) for name in type(value).model_fields}
            )
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    out: M = walk(model)
    return out
