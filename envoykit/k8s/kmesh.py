"""The in-cluster copy of a mesh: the same services, routes and policy, with addresses a pod can use.

On one machine every address of mesh.yaml is a loopback socket. In a cluster each workload is a pod with
its app and its sidecar Envoy sharing the pod's network namespace, so (ports unchanged):

==========================  ===============================================================
app (``workloads.address``)  ``127.0.0.1`` (the sidecar reaches it inside the pod)
sidecar ``inbound``          ``0.0.0.0`` (mesh traffic arrives on the pod IP)
sidecar outbound, admin      ``127.0.0.1`` (only the app and the pod see them)
ingress gateway              ``0.0.0.0``
egress gateway               ``<name>.<ns>.svc.<domain>``: sidecars reach it by its Service; a
                             gateway whose host is a name listens on every interface
extension servers            ``envoykit-<server>.<ns>.svc.<domain>`` (STRICT_DNS clusters); the
                             access-log server ``envoykit-access-log``
control plane                ``0.0.0.0`` (Envoys use ``envoykit-control.<ns>.svc.<domain>``)
Wasm modules, gateway TLS    files mounted from a ConfigMap / Secret
==========================  ===============================================================

Endpoints then come from the API (:mod:`envoykit.k8s.discovery`): pod IPs with the model's ports.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.types import Address
from envoykit.k8s import names

LOOPBACK = "127.0.0.1"
ANY = "0.0.0.0"


#: the Service of the access-log telemetry server (``envoykit telemetry serve``)
ACCESS_LOG = "envoykit-access-log"


def server_service(server: str) -> str:
    """The Service name of an extension server: ``authz`` → ``envoykit-authz``."""
    return f"envoykit-{server}"


def _host(addr: Address, host: str) -> Address:
    return addr.model_copy(update={"host": host})


def wasm_mount_path(file: str) -> str:
    """Where a Wasm module is mounted in a pod (from the ``envoykit-wasm`` ConfigMap)."""
    return str(PurePosixPath(names.WASM_DIR) / Path(file).name)


def with_gate_url(mesh: Mesh, namespace: str, cluster_domain: str, metrics_port: int) -> Mesh:
    """Point ``extensions.authz.gate`` (when set, with ``native_gate`` on) at the authz Service's
    ``/gate`` on its metrics port: the control plane's pod does not mount the policy directory, and
    reads only the gate document the servers publish for the policy they serve."""
    authz = mesh.extensions.authz
    if authz.gate is None or not authz.native_gate:
        return mesh
    host = names.service_dns(server_service("authz"), namespace, cluster_domain)
    authz = authz.model_copy(update={"gate": f"http://{host}:{metrics_port}/gate"})
    return mesh.model_copy(update={"extensions": mesh.extensions.model_copy(update={"authz": authz})})


def k8s_mesh(mesh: Mesh, namespace: str, cluster_domain: str = "cluster.local") -> Mesh:
    """The in-cluster copy of ``mesh`` (see the module docstring); ``namespace`` is where envoykit's own
    components (control plane, servers) run. The copy still passes :func:`envoykit.control.check_mesh`."""

    def dns(name: str) -> str:
        return names.service_dns(name, namespace, cluster_domain)

    ext = mesh.extensions
    extensions = ext.model_copy(
        update={
            "authz": ext.authz.model_copy(
                update={"address": _host(ext.authz.address, dns("envoykit-authz"))}
            ),
            "ratelimit": ext.ratelimit.model_copy(
                update={"address": _host(ext.ratelimit.address, dns("envoykit-ratelimit"))}
            ),
            "telemetry": ext.telemetry.model_copy(
                update={"address": _host(ext.telemetry.address, dns("envoykit-telemetry"))}
            ),
            "processors": [
                p.model_copy(update={"address": _host(p.address, dns(server_service(f"processor-{p.name}")))})
                for p in ext.processors
            ],
            "wasm": [w.model_copy(update={"file": wasm_mount_path(w.file)}) for w in ext.wasm],
        }
    )
    access_log = getattr(ext, "access_log", None)  # the access-log telemetry server, where the model has it
    if access_log is not None:
        extensions = extensions.model_copy(
            update={
                # the gRPC stream: a pod's Envoy admin listens on loopback, where the telemetry server
                # cannot read the stats transport's counts
                "access_log": access_log.model_copy(
                    update={"address": _host(access_log.address, dns(ACCESS_LOG)), "transport": "grpc"}
                )
            }
        )
    services = []
    for svc in mesh.services:
        workloads = []
        for wl in svc.workloads:
            sidecar = None
            if wl.sidecar is not None:
                sc = wl.sidecar
                sidecar = sc.model_copy(
                    update={
                        "inbound": _host(sc.inbound, ANY),
                        "outbound": _host(sc.outbound, LOOPBACK),
                        "admin": _host(sc.admin, LOOPBACK),
                        "outbound_tcp": {k: _host(a, LOOPBACK) for k, a in sc.outbound_tcp.items()},
                    }
                )
            workloads.append(
                wl.model_copy(update={"address": _host(wl.address, LOOPBACK), "sidecar": sidecar})
            )
        services.append(svc.model_copy(update={"workloads": workloads}))
    gateways = []
    for gw in mesh.gateways:
        host = ANY if gw.kind == "ingress" else names.service_dns(gw.name, mesh.ns(gw), cluster_domain)
        update: dict[str, object] = {"address": _host(gw.address, host), "admin": _host(gw.admin, LOOPBACK)}
        if gw.tls is not None:
            base = PurePosixPath(names.TLS_DIR) / gw.name
            update["tls"] = gw.tls.model_copy(
                update={"cert_file": str(base / "tls.crt"), "key_file": str(base / "tls.key")}
            )
        gateways.append(gw.model_copy(update=update))
    control = mesh.control_plane.model_copy(
        update={"xds": _host(mesh.control_plane.xds, ANY), "state_dir": names.STATE_DIR}
    )
    return mesh.model_copy(
        update={
            "extensions": extensions,
            "services": services,
            "gateways": gateways,
            "control_plane": control,
        }
    )


def xds_address(mesh: Mesh, namespace: str, cluster_domain: str = "cluster.local") -> Address:
    """Where Envoys in the cluster reach the control plane (its Service, the model's xDS port)."""
    return Address(
        host=names.service_dns(names.CONTROL, namespace, cluster_domain), port=mesh.control_plane.xds.port
    )
