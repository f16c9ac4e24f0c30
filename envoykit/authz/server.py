"""Assemble and run the authz server process: policy watcher, engine, servicer, gRPC runner.

By default Check is served by the lean unary server (:mod:`envoykit.core.unary`): one event loop,
the policy called inline; requests that a rule marked ``blocking`` applies to are decided on
``threads`` handler threads. ``server="grpcio"`` keeps the thread-pool grpcio server
(:class:`~envoykit.core.server.SyncGrpcServer`, with reflection).

``workers > 1`` runs that many processes on the same port (the parent's exclusive reservation,
shared with its workers only); the parent supervises them and serves their merged metrics
(prometheus-client multiprocess mode). Envoy spreads calls over processes only across connections,
so a multi-worker deployment also caps streams per connection on the authz cluster (see
``envoy/authz.yaml``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from envoykit.authz import metrics
from envoykit.authz.decisionlog import DecisionLog
from envoykit.authz.engine import Engine, EngineSettings
from envoykit.authz.gatepub import GatePublisher
from envoykit.authz.loader import Policy, PolicyEmptied, load_policy
from envoykit.authz.service import CHECK_PATH, SERVICE_NAME, AuthorizationService
from envoykit.core.bind import RESERVED_FD_ENV, bind_exclusive
from envoykit.core.logs import get_logger
from envoykit.core.metrics import Health, start_metrics_server
from envoykit.core.reload import WatchedConfig
from envoykit.core.server import SyncGrpcServer, serve_sync_forever, termination_signal
from envoykit.core.unary import UnaryMethod, UnaryServer, serve_unary_forever

log = get_logger("authz")


@dataclass(frozen=True)
class ServerOptions:
    """Options of ``envoykit authz serve`` (see its ``--help``)."""

    policy_dir: Path
    address: str = "127.0.0.1:9191"
    metrics_port: int | None = None
    settings: EngineSettings = field(default_factory=EngineSettings)
    decision_log: str | None = None
    decision_log_sample_allow: float = 1.0
    threads: int = 2
    workers: int = 1
    watch: bool = True
    allow_empty_policy: bool = False
    settle_ms: float = 250.0
    server: str = "lean"
    gate_file: Path | None = None


def _service(
    opts: ServerOptions,
) -> tuple[AuthorizationService, WatchedConfig[Policy], DecisionLog | None, GatePublisher]:
    holder: list[WatchedConfig[Policy]] = []
    publisher: list[GatePublisher] = []

    def loader(path: Path) -> Policy:
        try:
            return load_policy(
                path, holder[0].current if holder else None, allow_empty=opts.allow_empty_policy
            )
        except PolicyEmptied:
            metrics.EMPTIED_REFUSED.inc()
            raise

    def changed(_policy: Policy) -> None:
        publisher[0].publish()  # the gate follows every reload the server accepted, and only those

    policy = WatchedConfig("authz", opts.policy_dir, loader, settle_ms=opts.settle_ms, on_change=changed)
    holder.append(policy)
    publisher.append(GatePublisher(policy, opts.gate_file, dry_run=opts.settings.dry_run))
    publisher[0].publish()
    dlog = DecisionLog(opts.decision_log, opts.decision_log_sample_allow) if opts.decision_log else None
    return AuthorizationService(policy, Engine(opts.settings), dlog), policy, dlog, publisher[0]


def build(opts: ServerOptions) -> tuple[SyncGrpcServer, WatchedConfig[Policy]]:
    """Load the policy (raises ConfigError when the first load fails) and build the grpcio server."""
    service, policy, dlog, gate = _service(opts)
    server = SyncGrpcServer("authz", opts.address, threads=opts.threads, metrics_port=opts.metrics_port)
    server.add_json_route("/gate", gate.route)
    server.add_service(ea_grpc.add_AuthorizationServicer_to_server, service, SERVICE_NAME)
    if opts.watch:
        stop = threading.Event()
        policy.watch_in_thread(stop)
        server.on_stop(stop.set)
    if dlog is not None:
        server.on_stop(dlog.close)
    return server, policy


def build_lean(opts: ServerOptions) -> tuple[UnaryServer, WatchedConfig[Policy]]:
    """Like :func:`build`, on the lean unary server; call it inside the event loop that serves."""
    service, policy, dlog, gate = _service(opts)
    pool = ThreadPoolExecutor(max_workers=max(1, opts.threads), thread_name_prefix="authz-blocking")
    service.use_offload(pool)
    server = UnaryServer("authz", opts.address, metrics_port=opts.metrics_port)
    server.add_json_route("/gate", gate.route)
    server.add_service(SERVICE_NAME, [UnaryMethod(CHECK_PATH, ea.CheckRequest, service.lean_check)])
    if opts.watch:
        stop = threading.Event()
        policy.watch_in_thread(stop)
        server.on_stop(stop.set)
    server.on_stop(lambda: pool.shutdown(wait=False, cancel_futures=True))
    if dlog is not None:
        server.on_stop(dlog.close)
    return server, policy


def run(opts: ServerOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain; with ``workers > 1`` supervise that many processes.

    Raises:
        ConfigError: the policy does not load.
        AddressInUse: another process serves the address.
    """
    if opts.workers > 1:
        run_workers(opts)
        return
    if opts.server == "grpcio":
        server, _ = build(opts)
        serve_sync_forever(server)
        return
    serve_unary_forever(lambda: build_lean(opts)[0])


def _worker_args(opts: ServerOptions, address: str) -> list[str]:
    s = opts.settings
    args = [
        sys.executable, "-m", "envoykit.cli", "authz", "serve",
        "--policy-dir", str(opts.policy_dir),
        "--address", address,
        "--threads", str(opts.threads),
        "--server", opts.server,
        "--rule-budget-ms", str(s.rule_budget_ms),
        "--failure-status", str(s.failure_status),
        "--workers", "1",
        "--settle-ms", str(opts.settle_ms),
    ]  # fmt: skip
    if opts.allow_empty_policy:
        args.append("--allow-empty-policy")
    if opts.gate_file is not None:  # every worker loads the same directory and writes the same document
        args += ["--gate-file", str(opts.gate_file)]
    if s.dry_run:
        args.append("--dry-run")
    if opts.decision_log:
        args += [
            "--decision-log",
            opts.decision_log,
            "--decision-log-sample-allow",
            str(opts.decision_log_sample_allow),
        ]
    return args


def run_workers(opts: ServerOptions) -> None:
    """Run ``opts.workers`` server processes on one port; restart any that dies; merge their metrics.

    The parent binds the address exclusively and hands that socket to its workers, which alone may
    join it (:mod:`envoykit.core.bind`); a second server on the address fails to start.

    Raises:
        AddressInUse: another process serves the address.
        RuntimeError: the workers keep failing at start.
    """
    reservation = bind_exclusive(opts.address, listen=False, share_with_workers=True)
    host = opts.address.rpartition(":")[0]
    address = f"{host}:{reservation.getsockname()[1]}"
    with reservation, tempfile.TemporaryDirectory(prefix="envoykit-authz-metrics-") as mdir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": mdir, RESERVED_FD_ENV: str(reservation.fileno())}
        metrics_server = None
        health = Health()
        if opts.metrics_port is not None:
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=mdir)
            metrics_server, _, _ = start_metrics_server(opts.metrics_port, registry=registry, health=health)
        args = _worker_args(opts, address)

        def start() -> tuple[subprocess.Popen[bytes], float]:
            return subprocess.Popen(args, env=env, pass_fds=(reservation.fileno(),)), time.monotonic()

        procs = [start() for _ in range(opts.workers)]
        log.info("workers started", address=address, workers=opts.workers, pids=[p.pid for p, _ in procs])
        stopping = termination_signal()
        quick_exits = 0
        while not stopping.wait(0.5):
            for i, (p, started) in enumerate(procs):
                if p.poll() is not None:
                    log.error("worker exited, restarting", pid=p.pid, code=p.returncode)
                    quick_exits = quick_exits + 1 if time.monotonic() - started < 5 else 0
                    if quick_exits >= 3:  # failing at start (e.g. bad policy): do not loop forever
                        stopping.set()
                        break
                    time.sleep(0.5)
                    procs[i] = start()
        health.draining = True
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if metrics_server is not None:
            metrics_server.shutdown()
    if quick_exits >= 3:
        raise RuntimeError(f"authz workers on {address} keep failing at start; see their errors above")
