"""Held: what a delta client holds, as shared whole parts plus per-name overrides (envoykit.control.xds.held)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from envoykit.control.xds.held import Held
from envoykit.control.xds.snapshot import Part


def part(**versions: str) -> Part:
    return Part({n: cluster_pb2.Cluster(name=n, alt_stat_name=v) for n, v in versions.items()})


def test_whole_parts_overrides_and_shadowing() -> None:
    h = Held()
    a, b = part(x="1", y="1"), part(x="2", z="2")
    h.add_part(a)
    assert h.get("x") == a.versions["x"] and h.holds(a) and len(h) == 2
    h.pop("x")  # unsubscribed: no longer held although its part is
    assert "x" not in h and not h.holds(a) and sorted(h) == ["y"]
    h["y"] = "v9"  # a newer version sent on its own
    assert h.get("y") == "v9"
    h.add_part(b)  # the newer part shadows the older one's x
    assert h.get("x") == b.versions["x"] and h.holds(b) and sorted(h) == ["x", "y", "z"]
    h.remove_part(b)  # refused: back to what it held
    h.pop("x")
    assert "x" not in h and "z" not in h and h.get("y") == "v9"


def test_many_parts_fold_into_names() -> None:
    h = Held()
    for i in range(12):
        h.add_part(part(**{f"n{i}": "1"}))
    assert len(h.parts) <= 8 and len(h) == 12 and all(f"n{i}" in h for i in range(12))


def test_an_update_of_a_held_part_takes_its_place() -> None:
    from envoy.config.endpoint.v3 import endpoint_pb2

    base = Part({n: endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in ("a", "b", "c")})
    new = base.replace({"b": endpoint_pb2.ClusterLoadAssignment(cluster_name="b", endpoints=[{}])})
    assert new.base is base and new.changed == {"b"}
    h = Held()
    h.add_part(base)
    h["b"] = new.versions["b"]  # what the protocol sends: the changed name on its own
    h.rebase(new)
    assert h.parts == [new] and h.names == {} and h.holds(new)
    assert {n: h.get(n) for n in "abc"} == new.versions
    h.remove_part(new)  # refused: it keeps the part it held
    h.add_part(base)
    h["b"] = base.versions["b"]
    assert {n: h.get(n) for n in "abc"} == base.versions


def test_wire_cache_shares_bytes_and_stays_bounded() -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    from envoykit.control.xds.snapshot import WireCache, resources_wire

    p = part(a="1", b="2")
    cache = WireCache(max_bytes=4096)
    one = cache.sotw(p.items.values())
    assert one is cache.sotw(list(p.items.values())) and one == resources_wire(p.items.values())
    entries = [(n, p.versions[n], a) for n, a in p.items.items()]
    delta = cache.delta(entries)
    assert delta is cache.delta(entries)
    msg = discovery_pb2.DeltaDiscoveryResponse.FromString(delta)
    assert [(r.name, r.version) for r in msg.resources] == [(n, v) for n, v, _ in entries]
    for i in range(200):  # other resources push the first ones out: the bound holds
        cache.sotw(part(**{f"n{i}": "x" * 50}).items.values())
    assert cache._bytes <= 4096
