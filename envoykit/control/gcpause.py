"""Pause Python's cyclic garbage collector while a change of the mesh is compiled.

Parsing, validating and translating a 5,000-service mesh allocates millions of objects (YAML nodes,
pydantic models, protobuf messages) that nearly all survive until the version is packed; each
allocation burst triggers collections that walk every tracked object again and find no garbage.
Measured at 5,000 services (CPU seconds): parse + validate 1.8 to 2.2 → 0.7 to 0.8, pack 0.8 → 0.3 with the
collector paused. Reference counting still frees everything that is not in a cycle meanwhile.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector (process-wide) for the ``with`` block; nested and concurrent
    uses re-enable it only when the last one ends, and only if it was enabled before the first."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


_was_enabled = True
