"""Upstreams with behaviour the echo server cannot give: fail the first N tries, or always fail."""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.upstream import EchoServer
from tests.upstream import _Handler as _EchoHandler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FlakyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        key = self.headers.get("x-test-id", "")
        with self.server.lock:
            self.server.seen[key] += 1
            n = self.server.seen[key]
        failing = self.server.always_fail or n <= self.server.fail_first
        status = 503 if failing else 200
        body = f"{self.server.label} try {n}\n".encode()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", self.server.label)
        self.end_headers()
        self.wfile.write(body)


class FlakyServer(ThreadingHTTPServer):
    """Answers 503 to the first ``fail_first`` requests of each ``x-test-id`` (or to all with
    ``always_fail``), 200 afterwards; ``seen`` counts requests per ``x-test-id``."""

    daemon_threads = True

    def __init__(self, label: str = "flaky", *, fail_first: int = 1, always_fail: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.label = label
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def __enter__(self) -> FlakyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _NoDelayEchoHandler(_EchoHandler):
    # headers and body go out in separate writes; without TCP_NODELAY each response waits ~40 ms
    # for the peer's delayed ACK (Nagle), which makes 1,000-request tests needlessly slow
    disable_nagle_algorithm = True


class Echo(EchoServer):
    """tests.upstream.EchoServer with TCP_NODELAY on its connections (same behaviour, no 40 ms stalls)."""

    def __init__(self, label: str = "echo") -> None:
        super().__init__(label)
        self.RequestHandlerClass = _NoDelayEchoHandler


def self_signed(directory: Path, dns_name: str) -> tuple[Path, Path]:
    """Write a self-signed ECDSA certificate naming ``dns_name`` and its key; return (cert, key) paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{dns_name}.crt", directory / f"{dns_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class TlsEcho(Echo):
    """An :class:`Echo` serving HTTPS with the given certificate and key."""

    def __init__(self, label: str, cert: Path, key: Path) -> None:
        super().__init__(label)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
