"""The shared echo upstream, also reading ``transfer-encoding: chunked`` request bodies.

Envoy forwards a body whose length may change (STREAMED ext_proc modes) with chunked encoding.
"""

from __future__ import annotations

from typing import Any

from tests.upstream import EchoServer, _Handler


class _ChunkedReader:
    def __init__(self, rfile: Any) -> None:
        self.rfile = rfile

    def read_all(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()


class _Handler2(_Handler):
    def _serve(self) -> None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = _ChunkedReader(self.rfile).read_all()
            del self.headers["transfer-encoding"]
            self.headers["content-length"] = str(len(body))
            self.headers["x-was-chunked"] = "1"
            import io

            self.rfile = io.BufferedReader(io.BytesIO(body))  # type: ignore[assignment]
        super()._serve()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class ChunkedEchoServer(EchoServer):
    """:class:`tests.upstream.EchoServer` that also decodes chunked request bodies."""

    def __init__(self, label: str = "echo") -> None:
        super().__init__(label)
        self.RequestHandlerClass = _Handler2
