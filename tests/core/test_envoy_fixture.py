from __future__ import annotations

import httpx
import pytest

from envoykit.core import EnvoyError, free_port, validate_envoy_config
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener, route_to


def test_envoy_proxies_to_echo_upstream(envoy, echo) -> None:
    port = free_port()
    cfg = bootstrap([http_listener(port, [route_to("echo")])], [cluster("echo", echo.port)])
    e = envoy(cfg)
    r = httpx.get(f"http://127.0.0.1:{port}/hello?x=1", headers={"x-test": "yes"})
    assert r.status_code == 200
    assert r.json()["path"] == "/hello?x=1"
    assert r.json()["headers"]["x-test"] == "yes"
    assert e.stats("cluster.echo.upstream_rq_200")["cluster.echo.upstream_rq_200"] == 1


@pytest.mark.envoy
def test_direct_response_and_validate() -> None:
    cfg = bootstrap([http_listener(free_port(), [direct_response(201, "made")])], [])
    assert "OK" in validate_envoy_config(cfg)


@pytest.mark.envoy
def test_validate_names_the_problem() -> None:
    cfg = bootstrap([http_listener(free_port(), [route_to("missing")])], [])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "codec_type"
    ] = "NOPE"
    with pytest.raises(EnvoyError, match="NOPE"):
        validate_envoy_config(cfg)
