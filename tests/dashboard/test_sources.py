"""Health of components: scrapes and probes that answer, and ones that do not (real sockets)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from envoykit.core import free_port, start_metrics_server
from envoykit.dashboard.accesslog import recent_lines
from envoykit.dashboard.cli import dashboard
from envoykit.dashboard.sources import Health, HealthProbe, ScrapeSource, ScrapeTarget, Snapshot, probe


@pytest.fixture
def listener() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _run(coro_fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with aiohttp.ClientSession() as session:
            return await coro_fn(session)

    return asyncio.run(go())


def test_probes_tell_up_from_down(listener: int) -> None:
    server, _, metrics = start_metrics_server(0)
    dead = free_port()
    try:
        got: list[Health] = _run(
            lambda s: asyncio.gather(
                probe(s, HealthProbe("app", f"tcp://127.0.0.1:{listener}", "app")),
                probe(s, HealthProbe("gone", f"tcp://127.0.0.1:{dead}", "app")),
                probe(s, HealthProbe("web", f"http://127.0.0.1:{metrics}/metrics")),
                probe(s, HealthProbe("web-gone", f"http://127.0.0.1:{dead}/healthz")),
            )
        )
    finally:
        server.shutdown()
        server.server_close()
    assert [(h.name, h.up) for h in got] == [
        ("app", True),
        ("gone", False),
        ("web", True),
        ("web-gone", False),
    ]
    assert "ConnectionRefused" in got[1].error or "Errno 111" in got[1].error


def test_a_scrape_that_fails_marks_its_component_down_and_keeps_the_others(listener: int) -> None:
    server, _, metrics = start_metrics_server(0)
    try:
        snap: Snapshot = _run(
            ScrapeSource(
                [
                    ScrapeTarget("ok", f"http://127.0.0.1:{metrics}/metrics", "server"),
                    ScrapeTarget("down", f"http://127.0.0.1:{free_port()}/metrics", "server"),
                ]
            ).fetch
        )
    finally:
        server.shutdown()
        server.server_close()
    assert {h.name: h.up for h in snap.health} == {"ok": True, "down": False}


def test_cli_refuses_bad_arguments() -> None:
    runner = CliRunner()
    r = runner.invoke(dashboard, ["--scrape", "nourl"])
    assert r.exit_code == 2 and "NAME[:KIND]=URL" in r.output
    r = runner.invoke(dashboard, ["--prometheus", "http://x", "--probe", "app=ftp://x"])
    assert r.exit_code == 2 and "tcp://" in r.output
    r = runner.invoke(dashboard, [])
    assert r.exit_code == 2 and "--prometheus" in r.output


def test_cli_refuses_an_address_another_process_serves(listener: int) -> None:
    r = CliRunner().invoke(
        dashboard, ["--prometheus", "http://127.0.0.1:1", "--address", f"127.0.0.1:{listener}"]
    )
    assert r.exit_code == 1 and "address in use" in r.output, r.output


def test_access_lines_of_a_service_newest_last_across_files(tmp_path: Path) -> None:
    authz = tmp_path / "authz.log"
    authz.write_text(
        "\n".join(
            [
                '{"event": "serving", "level": "info"}',  # a server's own log line: not a request
                '{"time": "2026-12-03T10:00:01.000Z", "host": "backend", "path": "/a", "rule": "r"}',
                '{"time": "2026-12-03T10:00:03.000Z", "host": "frontend:80", "path": "/b", "rule": "r"}',
                "not json",
            ]
        )
    )
    access = tmp_path / "access.json"
    access.write_text(
        '{"@timestamp": "2026-12-03T10:00:02.000Z", "destination_workload": "backend-v2", "status": 200}\n'
        '{"@timestamp": "2026-12-03T10:00:04.000Z", "destination_service": "backend.default.svc", "method": "GET"}\n'
    )
    lines = recent_lines([authz, tmp_path / "missing.log", access], {"backend", "backend-v1", "backend-v2"})
    assert [
        (line["_file"], line.get("path") or line.get("status") or line.get("method")) for line in lines
    ] == [
        ("authz.log", "/a"),
        ("access.json", 200),
        ("access.json", "GET"),
    ]
    assert recent_lines([tmp_path], {"frontend"}, limit=5)[0]["path"] == "/b"  # a folder: every file in it
