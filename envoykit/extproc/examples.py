"""Small ready processors, for trying the blocking path and for the benchmark.

Load with ``envoykit extproc serve --processor envoykit.extproc.examples:stamp``.
"""

from __future__ import annotations

from envoykit.extproc.exchange import Exchange
from envoykit.extproc.processor import Processor


class Stamp(Processor):
    """Adds ``x-processed-by: envoykit`` to every request and answers 403 to paths under ``/blocked``.

    A blocking header processor: Envoy waits for it on request headers (one round trip).
    """

    name = "stamp"

    def on_request_headers(self, ex: Exchange) -> None:
        """Stamp the request; refuse ``/blocked...``."""
        path = ex.headers.get(":path", "") if ex.headers is not None else ""
        if path.startswith("/blocked"):
            ex.respond(403, "blocked by envoykit\n")
            return
        # (names starting with x-envoy are refused by Envoy's default mutation rules)
        ex.set_header("x-processed-by", "envoykit")


stamp = Stamp()
