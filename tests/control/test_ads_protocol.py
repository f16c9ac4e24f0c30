"""The ADS protocol through the real gRPC API with the Python client: node tokens, ACK/NACK, stale nonces,
named resources, pushes on change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from envoykit.control.server import ControlPlane
from envoykit.control.xds.client import AdsClient
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from tests.control.meshkit import addr, workload, write_mesh


def mesh_doc(weight_v2: int = 0) -> dict[str, Any]:
    return {
        "trust_domain": "test.local",
        "services": [
            {
                "name": "backend",
                "mtls": "STRICT",
                "workloads": [workload("backend-v1", "v1", 9), workload("backend-v2", "v2", 10)],
            }
        ],
        "gateways": [{"name": "ingress", "kind": "ingress", "address": addr(), "admin": addr()}],
        "virtual_services": [
            {
                "name": "in",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "backend", "subset": "v1"}, "weight": 100 - weight_v2},
                            {"destination": {"host": "backend", "subset": "v2"}, "weight": weight_v2},
                        ]
                    }
                ],
            }
        ],
    }


@pytest.fixture
async def cp(tmp_path: Path) -> Any:
    path = write_mesh(tmp_path / "mesh.yaml", mesh_doc())
    plane = ControlPlane(path, address="127.0.0.1:0", state_dir=tmp_path / "state")
    await plane.start()
    yield plane
    await plane.stop(0.1)


def target(cp: ControlPlane) -> str:
    return f"127.0.0.1:{cp.port}"


async def test_stream_without_a_valid_token_is_refused(cp: ControlPlane) -> None:
    for token in (None, "forged", cp.tokens.token_for("sidecar~backend-v2") if cp.tokens else ""):
        async with AdsClient(target(cp), "sidecar~backend-v1", token) as ads:
            await ads.send(CLUSTER)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ads.recv()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_sotw_ack_nack_stale_nonce_and_named_resources(cp: ControlPlane) -> None:
    assert cp.tokens is not None
    node = "ingress~ingress"
    async with AdsClient(target(cp), node, cp.tokens.token_for(node)) as ads:
        await ads.send(CLUSTER)
        cds = await ads.recv()
        assert cds.type_url == CLUSTER and len(cds.resources) == 4  # backend, v1, v2, envoykit_telemetry
        await ads.ack(cds)
        await ads.send(ENDPOINT, ["outbound|80|v1|backend.default", "no-such-cluster"])
        eds = await ads.recv()
        assert len(eds.resources) == 1  # only requested names that exist
        # listeners wait until every cluster has its endpoints (make before break)
        await ads.send(LISTENER)
        with pytest.raises(TimeoutError):
            await ads.recv(timeout=0.5)
        all_eds = sorted(cp.current.snapshots[node].get(ENDPOINT).names())
        await ads.ack(eds, all_eds)
        eds = await ads.recv()
        # EDS is not a wildcard type: only the newly requested names, not the one it holds
        assert eds.type_url == ENDPOINT and len(eds.resources) == 2
        await ads.ack(eds, all_eds)
        lds = await ads.recv()
        assert lds.type_url == LISTENER
        await ads.ack(lds)
        await ads.send(ROUTE, ["gateway|ingress"])
        rds = await ads.recv()
        assert len(rds.resources) == 1
        # NACK the routes: recorded, and the same version is not sent again
        await ads.nack(rds, "route refused by the test", names=["gateway|ingress"])
        await asyncio.sleep(0.3)
        (nack,) = cp.status()["nacks"]
        assert nack == {**nack, "node": node, "type": "RDS", "version": rds.version_info}
        assert "refused by the test" in nack["message"]
        with pytest.raises(TimeoutError):
            await ads.recv(timeout=0.5)
        # a request with an old nonce is stale and ignored (no response)
        await ads.send(CLUSTER, version=cds.version_info, nonce="not-the-last-nonce")
        with pytest.raises(TimeoutError):
            await ads.recv(timeout=0.5)
        # a change of the file is pushed: CDS/EDS first, routes once the clusters are acknowledged
        cp.config.path.write_text(
            cp.config.path.read_text().replace("weight: 0", "weight: 30").replace("weight: 100", "weight: 70")
        )
        assert await asyncio.to_thread(cp.config.reload)
        got = await ads.recv()
        assert got.type_url == ROUTE and got.version_info != rds.version_info
        await ads.ack(got, ["gateway|ingress"])
        await asyncio.sleep(0.2)
        assert cp.status()["nacks"] == []


async def test_secrets_are_served_per_node_identity(cp: ControlPlane) -> None:
    assert cp.tokens is not None
    node = "sidecar~backend-v1"
    async with AdsClient(target(cp), node, cp.tokens.token_for(node)) as ads:
        await ads.send(SECRET, ["default", "ROOTCA"])
        resp = await ads.recv()
    from cryptography import x509
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    secrets = {}
    for a in resp.resources:
        s = secret_pb2.Secret()
        a.Unpack(s)
        secrets[s.name] = s
    assert set(secrets) == {"default", "ROOTCA"}
    cert = x509.load_pem_x509_certificate(secrets["default"].tls_certificate.certificate_chain.inline_bytes)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://test.local/ns/default/sa/backend"
    ]


async def test_delta_sends_only_changes_and_removals(cp: ControlPlane) -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    assert cp.tokens is not None
    node = "ingress~ingress"
    out: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()

    async def requests() -> Any:
        while (req := await out.get()) is not None:
            yield req

    async with grpc.aio.insecure_channel(target(cp)) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.DeltaAggregatedResources(
            requests(), metadata=(("x-envoykit-node-token", cp.tokens.token_for(node)),)
        )
        out.put_nowait(discovery_pb2.DeltaDiscoveryRequest(node=base_pb2.Node(id=node), type_url=CLUSTER))
        first = await asyncio.wait_for(call.read(), 10)
        assert sorted(r.name for r in first.resources) == [
            "envoykit_telemetry",
            "outbound|80|v1|backend.default",
            "outbound|80|v2|backend.default",
            "outbound|80||backend.default",
        ]
        out.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=first.nonce))
        # drop subset v2 from the mesh: only the removal travels (no listener/route watch holds it back)
        text = cp.config.path.read_text()
        doc = mesh_doc(0)
        doc["virtual_services"][0]["http"][0]["route"] = [
            {"destination": {"host": "backend", "subset": "v1"}}
        ]
        write_mesh(cp.config.path, {**doc, "gateways": yaml_gateways(text)})
        assert await asyncio.to_thread(cp.reload)
        change = await asyncio.wait_for(call.read(), 10)
        assert list(change.removed_resources) == ["outbound|80|v2|backend.default"] and not change.resources
        out.put_nowait(None)
        call.cancel()


def yaml_gateways(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)["gateways"]
