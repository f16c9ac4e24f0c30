"""The sidecar-injection webhook: ``admission.k8s.io/v1`` AdmissionReview over HTTPS, served by the
control plane, its certificate issued by the mesh CA (the MutatingWebhookConfiguration's ``caBundle``
is the mesh's trust bundle).

Answers (Kubernetes "Dynamic Admission Control": ``response.uid`` echoes ``request.uid``; a mutation
is ``patchType: JSONPatch`` with the base64 RFC 6902 patch)::

    pod gets a sidecar                  allowed, patch
    pod labelled inject=false           allowed, no patch
    pod already injected                allowed, no patch, a warning
    pod cannot be injected              denied (code 400) with the reason and how to opt out:
      (hostNetwork, no workload of the mesh, workload without a sidecar)
    not a Pod / not CREATE              allowed, no patch

A pod that asked for a sidecar never starts without one: the webhook refuses it instead, and the
configuration's ``failurePolicy: Fail`` refuses it when the webhook cannot answer.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from envoykit.control.model.mesh import Mesh
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.pki.keyfiles import write_private
from envoykit.core.logs import get_logger
from envoykit.core.spiffe import spiffe_id
from envoykit.k8s import names
from envoykit.k8s.sidecar import AlreadyInjected, NotInjectable, SidecarOptions, sidecar_patch

_MAX_BODY = 3 << 20  # the API server sends at most ~3 MiB objects
_log = get_logger("webhook")


def review(mesh: Mesh, body: Any, opts: SidecarOptions | None = None) -> dict[str, Any]:
    """Answer one AdmissionReview (``admission.k8s.io/v1``) for ``mesh`` (the in-cluster mesh).

    Raises:
        ValueError: ``body`` is not an AdmissionReview v1 with a ``request.uid``.
    """
    if not isinstance(body, dict) or body.get("apiVersion") != "admission.k8s.io/v1":
        raise ValueError("expected an AdmissionReview of apiVersion admission.k8s.io/v1")
    if body.get("kind") != "AdmissionReview" or not isinstance(body.get("request"), dict):
        raise ValueError("expected kind AdmissionReview with a request")
    req = body["request"]
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("request.uid is missing")
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    pod = req.get("object")
    kind = (req.get("kind") or {}).get("kind")
    if kind != "Pod" or req.get("operation") != "CREATE" or not isinstance(pod, dict):
        return _answer(response)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName") or ""
    where = f"pod {req.get('namespace', '')}/{name}"
    if labels.get(names.POD_INJECT_LABEL) == "false":
        return _answer(response)
    try:
        patch = sidecar_patch(mesh, pod, opts)
    except AlreadyInjected as exc:
        response["warnings"] = [f"envoykit: {where} not injected: {exc}"]
        return _answer(response)
    except NotInjectable as exc:
        _log.warning("injection refused", pod=where, reason=str(exc))
        response["allowed"] = False
        response["status"] = {
            "code": 400,
            "message": f"envoykit sidecar injection refused for {where}: {exc}",
        }
        return _answer(response)
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    _log.info("sidecar injected", pod=where, workload=labels.get(names.WORKLOAD_LABEL, ""))
    return _answer(response)


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class _Handler(BaseHTTPRequestHandler):
    server: InjectionWebhook

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/inject":
            self._send(404, {"error": "not found: POST /inject"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > _MAX_BODY:
            self._send(400, {"error": f"body length {length} outside 1..{_MAX_BODY}"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            answer = review(self.server.mesh(), body, self.server.opts)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self._send(400, {"error": str(exc)})
            return
        self._send(200, answer)


class InjectionWebhook(ThreadingHTTPServer):
    """The webhook's HTTPS server on its own thread.

    Args:
        address: ``(host, port)``; port 0 picks a free one (see :attr:`port`).
        mesh: returns the in-cluster mesh being served now (the control plane's current model).
        ca: the mesh CA that issues the server certificate (renewed at half its life).
        namespace: the control plane's namespace (its SPIFFE ID ``…/ns/<ns>/sa/envoykit-control``).
        dns_names: the names the API server uses (``envoykit-control.<ns>.svc``).
        opts: the sidecar's image and resources.
        state_dir: where the certificate and key files live (mode 0600).
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        mesh: Callable[[], Mesh],
        ca: CertificateAuthority,
        namespace: str,
        dns_names: list[str],
        opts: SidecarOptions | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.mesh = mesh
        self.opts = opts
        self._ca = ca
        self._id = spiffe_id(ca.trust_domain, namespace, names.CONTROL)
        self._dns = dns_names
        self._dir = Path(state_dir or tempfile.mkdtemp(prefix="envoykit-webhook-")) / "webhook"
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stop = threading.Event()
        self.renew_at = self._issue()
        self.socket = self._ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def _issue(self) -> datetime:
        cert = self._ca.issue(self._id, dns_names=self._dns)
        chain, key = self._dir / "tls.crt", self._dir / "tls.key"
        write_private(chain, cert.chain_pem)
        write_private(key, cert.key_pem)
        self._ctx.load_cert_chain(chain, key)  # new handshakes use it; open connections keep theirs
        _log.info("webhook certificate issued", spiffe_id=self._id, not_after=str(cert.not_after))
        return cert.renew_at

    def _renewer(self) -> None:
        while not self._stop.is_set():
            wait = (self.renew_at - datetime.now(UTC)).total_seconds()
            if self._stop.wait(max(wait, 1.0)):
                return
            try:
                self.renew_at = self._issue()
            except Exception as exc:  # keep serving the current certificate; try again in a minute
                _log.error("webhook certificate renewal failed", error=str(exc))
                self._stop.wait(60)

    def start(self) -> None:
        """Serve on background threads (requests and certificate renewal)."""
        for target in (self.serve_forever, self._renewer):
            t = threading.Thread(target=target, daemon=True, name="envoykit-webhook")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        self.shutdown()
        self.server_close()
