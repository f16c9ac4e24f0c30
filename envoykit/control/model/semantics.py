"""Layer 2 of mesh validation: references and semantics the schema cannot see (Galley's analyzers).

Each problem is a :class:`Problem` with the field path (``virtual_services.0.http.1.route``) and a
message; the loader turns the first ones into a :class:`~envoykit.core.errors.ConfigError` with the
file and line. Checks:

* names unique (services, workloads, gateways, virtual services, destination rules, processors, Wasm);
* references exist: route/mirror hosts and subsets, VirtualService gateways, DestinationRule hosts,
  processors and Wasm plugins named by a proxy's ``extensions``;
* weights of a split sum to 100; duplicate routes (same match twice on one host and gateway);
* ports: no address is used twice (listeners, admin ports, apps, the control plane, extension servers);
* mTLS STRICT needs sidecars on every workload (PERMISSIVE ones are then called in plaintext); ``rewrite.uri`` needs a prefix or exact match;
* SPIFFE-valid trust domain, namespaces and service accounts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from envoykit.control.model.mesh import Mesh, ProxyExtensions
from envoykit.control.model.queries import subset_members
from envoykit.control.model.traffic import Destination
from envoykit.control.model.types import Address
from envoykit.core.spiffe import InvalidSpiffeId, spiffe_id

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """A semantic error at field path ``loc``."""

    loc: Loc
    message: str

    def __str__(self) -> str:
        return f"{'.'.join(str(x) for x in self.loc)}: {self.message}"


def _dupes(names: list[str]) -> set[str]:
    return {n for n, c in Counter(names).items() if c > 1}


def _subsets(mesh: Mesh, host: str) -> set[str]:
    svc = mesh.service(host)
    if svc is None:
        return set()
    dr = mesh.destination_rule(host)
    return {s.name for s in dr.subsets} if dr and dr.subsets else {w.version for w in svc.workloads}


def _check_destination(mesh: Mesh, dest: Destination, loc: Loc, out: list[Problem]) -> None:
    svc = mesh.service(dest.host)
    if svc is None:
        out.append(Problem((*loc, "host"), f"unknown service {dest.host!r}"))
        return
    if svc.protocol == "tcp":
        out.append(Problem((*loc, "host"), f"service {dest.host!r} is tcp; HTTP routes cannot reach it"))
    if dest.subset is not None and dest.subset not in _subsets(mesh, dest.host):
        known = ", ".join(sorted(_subsets(mesh, dest.host)))
        out.append(
            Problem((*loc, "subset"), f"service {svc.name!r} has no subset {dest.subset!r} (known: {known})")
        )
    if dest.port is not None and dest.port != svc.port:
        out.append(
            Problem((*loc, "port"), f"service {svc.name!r} listens on port {svc.port}, not {dest.port}")
        )


def _check_extensions(mesh: Mesh, ext: ProxyExtensions, loc: Loc, out: list[Problem]) -> None:
    for i, name in enumerate(ext.processors):
        if mesh.processor(name) is None:
            out.append(Problem((*loc, "processors", i), f"no processor {name!r} in extensions.processors"))
    for i, name in enumerate(ext.wasm):
        if mesh.wasm_plugin(name) is None:
            out.append(Problem((*loc, "wasm", i), f"no Wasm plugin {name!r} in extensions.wasm"))


def _check_addresses(mesh: Mesh, out: list[Problem]) -> None:
    by_port: dict[int, dict[str, Loc]] = {}  # port → host → who uses it

    def claim(addr: Address, loc: Loc) -> None:
        hosts = by_port.setdefault(addr.port, {})
        # 0.0.0.0 collides with every host on the same port
        clash = hosts.get(addr.host) or hosts.get("0.0.0.0")
        if clash is None and addr.host == "0.0.0.0" and hosts:
            clash = next(iter(hosts.values()))
        if clash is not None:
            where = ".".join(str(x) for x in clash)
            out.append(Problem(loc, f"address {addr} is already used by {where}"))
        else:
            hosts[addr.host] = loc

    claim(mesh.control_plane.xds, ("control_plane", "xds"))
    claim(mesh.extensions.authz.address, ("extensions", "authz", "address"))
    claim(mesh.extensions.ratelimit.address, ("extensions", "ratelimit", "address"))
    claim(mesh.extensions.telemetry.address, ("extensions", "telemetry", "address"))
    if mesh.extensions.access_log.enabled:
        claim(mesh.extensions.access_log.address, ("extensions", "access_log", "address"))
    for i, p in enumerate(mesh.extensions.processors):
        claim(p.address, ("extensions", "processors", i, "address"))
    for si, svc in enumerate(mesh.services):
        for wi, wl in enumerate(svc.workloads):
            loc: Loc = ("services", si, "workloads", wi)
            claim(wl.address, (*loc, "address"))
            if wl.sidecar is not None:
                for part in ("inbound", "outbound", "admin"):
                    claim(getattr(wl.sidecar, part), (*loc, "sidecar", part))
                for name, tcp_addr in wl.sidecar.outbound_tcp.items():
                    claim(tcp_addr, (*loc, "sidecar", "outbound_tcp", name))
    for gi, gw in enumerate(mesh.gateways):
        claim(gw.address, ("gateways", gi, "address"))
        claim(gw.admin, ("gateways", gi, "admin"))


def check_mesh(mesh: Mesh) -> list[Problem]:
    """Every semantic problem of ``mesh`` (empty list: the mesh is consistent)."""
    out: list[Problem] = []
    for field, names in (
        ("services", [s.name for s in mesh.services]),
        ("gateways", [g.name for g in mesh.gateways]),
        ("virtual_services", [v.name for v in mesh.virtual_services]),
        ("destination_rules", [d.name for d in mesh.destination_rules]),
    ):
        for n in _dupes(names):
            out.append(Problem((field, names.index(n, names.index(n) + 1), "name"), f"duplicate name {n!r}"))
    wl_names = [w.name for _, w in mesh.workloads()]
    for n in _dupes(wl_names):
        out.append(Problem(("services",), f"workload name {n!r} is used twice (node ids must be unique)"))
    for si, svc in enumerate(mesh.services):
        try:
            spiffe_id(mesh.trust_domain, mesh.ns(svc), mesh.service_account(svc))
        except InvalidSpiffeId as exc:
            out.append(Problem(("services", si), str(exc)))

    for si, svc in enumerate(mesh.services):
        loc: Loc = ("services", si)
        if svc.mtls == "STRICT" and any(w.sidecar is None for w in svc.workloads):
            out.append(Problem((*loc, "mtls"), "mtls STRICT needs a sidecar on every workload"))
        _check_extensions(mesh, svc.extensions, (*loc, "extensions"), out)
        for wi, wl in enumerate(svc.workloads):
            for name in wl.sidecar.outbound_tcp if wl.sidecar else {}:
                target = mesh.service(name)
                if target is None or target.protocol != "tcp":
                    out.append(
                        Problem(
                            (*loc, "workloads", wi, "sidecar", "outbound_tcp", name),
                            f"{name!r} is not a tcp service of the mesh",
                        )
                    )
        if svc.protocol == "tcp" and (
            svc.extensions.authz or svc.extensions.ratelimit or svc.extensions.wasm
        ):
            out.append(Problem((*loc, "extensions"), "HTTP extensions cannot run on a tcp service"))
    for gi, gw in enumerate(mesh.gateways):
        _check_extensions(mesh, gw.extensions, ("gateways", gi, "extensions"), out)
        if gw.extensions.authz is not None and gw.extensions.authz.skip_paths:
            out.append(
                Problem(
                    ("gateways", gi, "extensions", "authz", "skip_paths"),
                    "skip_paths is for sidecars; on a gateway set authz: {disabled: true} on the route",
                )
            )

    gateways = {g.name for g in mesh.gateways if g.kind == "ingress"}
    for vi, vs in enumerate(mesh.virtual_services):
        loc = ("virtual_services", vi)
        for gi, g in enumerate(vs.gateways):
            if g != "mesh" and g not in gateways:
                out.append(Problem((*loc, "gateways", gi), f"unknown ingress gateway {g!r} (or 'mesh')"))
        if "mesh" in vs.gateways:
            for hi, h in enumerate(vs.hosts):
                if mesh.service(h) is None:
                    out.append(
                        Problem((*loc, "hosts", hi), f"unknown service {h!r} (hosts on 'mesh' name services)")
                    )
        seen: set[str] = set()
        for ri, r in enumerate(vs.http):
            rloc: Loc = (*loc, "http", ri)
            for bi, branch in enumerate(r.route):
                _check_destination(mesh, branch.destination, (*rloc, "route", bi, "destination"), out)
            if len(r.route) > 1 or any(b.weight is not None for b in r.route):
                total = sum(b.weight or 0 for b in r.route)
                if total != 100:
                    out.append(Problem((*rloc, "route"), f"weights sum to {total}, not 100"))
            if r.mirror is not None:
                _check_destination(mesh, r.mirror, (*rloc, "mirror"), out)
            if r.rewrite and r.rewrite.uri is not None and any(m.uri and m.uri.regex for m in r.match):
                out.append(Problem((*rloc, "rewrite", "uri"), "uri rewrite needs prefix or exact matches"))
            key = repr([m.model_dump() for m in r.match])
            if key in seen:
                out.append(Problem((*rloc, "match"), "duplicate route: an earlier route has the same match"))
            seen.add(key)
    mesh_hosts: Counter[str] = Counter()
    for vs in mesh.virtual_services:
        if "mesh" in vs.gateways:
            for h in vs.hosts:
                target = mesh.service(h)
                if target is not None:
                    mesh_hosts[target.name] += 1
    for name, count in mesh_hosts.items():
        if count > 1:
            out.append(
                Problem(
                    ("virtual_services",), f"service {name!r} has {count} mesh VirtualServices; merge them"
                )
            )
    for di, dr in enumerate(mesh.destination_rules):
        dest = mesh.service(dr.host)
        if dest is None:
            out.append(Problem(("destination_rules", di, "host"), f"unknown service {dr.host!r}"))
            continue
        for si, sub in enumerate(dr.subsets):
            if not subset_members(mesh, dest, sub.name):
                out.append(
                    Problem(
                        ("destination_rules", di, "subsets", si), f"subset {sub.name!r} selects no workload"
                    )
                )
    _check_addresses(mesh, out)
    return out
