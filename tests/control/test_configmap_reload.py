"""mesh.yaml mounted from a ConfigMap: the kubelet writes the new contents to a new timestamped folder
and swaps the ``..data`` symlink to it (``mesh.yaml -> ..data/mesh.yaml``); no event names mesh.yaml
itself. The control plane must load the new model, and refuse a bad one the same way."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import yaml

from envoykit.control.server import ControlPlane
from envoykit.control.xds.type_urls import CLUSTER
from tests.control.meshkit import addr


def doc(services: list[str]) -> str:
    return yaml.safe_dump(
        {
            "services": [
                {"name": n, "mtls": "DISABLE", "workloads": [{"name": f"{n}-v1", "address": addr()}]}
                for n in services
            ],
            "gateways": [{"name": "ingress", "kind": "ingress", "address": addr(), "admin": addr()}],
        }
    )


def kubelet_write(mount: Path, stamp: str, text: str) -> None:
    """What the kubelet's atomic writer does: a new folder, a ``..data_tmp`` link renamed over ``..data``,
    the old folder removed."""
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    (mount / stamp).mkdir()
    (mount / stamp / "mesh.yaml").write_text(text)
    os.symlink(stamp, mount / "..data_tmp")
    os.rename(mount / "..data_tmp", mount / "..data")
    if not (mount / "mesh.yaml").is_symlink():
        os.symlink("..data/mesh.yaml", mount / "mesh.yaml")
    if old is not None:
        shutil.rmtree(mount / old)


async def wait_for(pred: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within timeout"
        await asyncio.sleep(0.05)


async def test_a_configmap_symlink_swap_reloads_the_model(tmp_path: Path) -> None:
    mount = tmp_path / "etc-mesh"
    mount.mkdir()
    kubelet_write(mount, "..2026_12_03_10_00_00.1", doc(["alpha"]))
    cp = ControlPlane(mount / "mesh.yaml", address="127.0.0.1:0", state_dir=tmp_path / "state", mtls=False)
    await cp.start()
    try:
        names = lambda: cp.cache.get("ingress~ingress").get(CLUSTER).names()  # noqa: E731
        assert "outbound|80||alpha.default" in names()
        await asyncio.sleep(0.5)  # the file watch is up
        kubelet_write(mount, "..2026_12_03_10_01_00.2", doc(["alpha", "beta"]))
        await wait_for(lambda: "outbound|80||beta.default" in names())
        assert cp.config.generation == 1
        # a bad version arriving the same way is refused; the last good one keeps serving
        kubelet_write(mount, "..2026_12_03_10_02_00.3", "services: [{name: 7}]\n")
        await wait_for(lambda: cp.config.last_error is not None)
        assert "outbound|80||beta.default" in names() and cp.config.generation == 1
    finally:
        await cp.stop(0.1)
