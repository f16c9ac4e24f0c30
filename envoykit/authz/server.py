"""Assemble and run the authz server process: policy watcher, engine, servicer, gRPC runner."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from envoykit.authz.decisionlog import DecisionLog
from envoykit.authz.engine import Engine, EngineSettings
from envoykit.authz.loader import Policy, load_policy
from envoykit.authz.service import SERVICE_NAME, AuthorizationService
from envoykit.core.reload import WatchedConfig
from envoykit.core.server import GrpcServer, serve_forever


@dataclass(frozen=True)
class ServerOptions:
    """Options of ``envoykit authz serve`` (see its ``--help``)."""

    policy_dir: Path
    address: str = "127.0.0.1:9191"
    metrics_port: int | None = None
    settings: EngineSettings = field(default_factory=EngineSettings)
    decision_log: str | None = None
    decision_log_sample_allow: float = 1.0
    watch: bool = True


def build(opts: ServerOptions) -> tuple[GrpcServer, WatchedConfig[Policy]]:
    """Load the policy (raises ConfigError when the first load fails) and build the server."""
    holder: list[WatchedConfig[Policy]] = []

    def loader(path: Path) -> Policy:
        return load_policy(path, holder[0].current if holder else None)

    policy = WatchedConfig("authz", opts.policy_dir, loader)
    holder.append(policy)
    dlog = DecisionLog(opts.decision_log, opts.decision_log_sample_allow) if opts.decision_log else None
    service = AuthorizationService(policy, Engine(opts.settings), dlog)
    server = GrpcServer("authz", opts.address, metrics_port=opts.metrics_port)
    server.add_service(ea_grpc.add_AuthorizationServicer_to_server, service, SERVICE_NAME)
    if opts.watch:
        stop = asyncio.Event()
        task: list[asyncio.Task[None]] = []

        async def start_watch() -> None:
            task.append(asyncio.create_task(policy.watch(stop)))

        async def stop_watch() -> None:
            stop.set()
            for t in task:
                t.cancel()
            if dlog is not None:
                dlog.close()

        server.on_start(start_watch)
        server.on_stop(stop_watch)
    return server, policy


async def run(opts: ServerOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain."""
    server, _ = build(opts)
    await serve_forever(server)
