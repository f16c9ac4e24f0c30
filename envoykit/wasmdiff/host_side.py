"""Run the cases in :mod:`envoykit.wasmhost` and observe each one like the Envoy side does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from envoykit.wasmdiff.cases import Case, CaseFile
from envoykit.wasmdiff.observe import CLIENT_IGNORED, LEVEL_NAMES, Observation
from envoykit.wasmhost.exchange import Outcome, run_exchange
from envoykit.wasmhost.host import Host
from envoykit.wasmhost.module import WasmModule, load_module
from envoykit.wasmhost.plugin import Plugin


def node_properties(cases: CaseFile) -> dict[str, object]:
    """The node of the Envoy side as the host's ``xds.node`` (Struct numbers are doubles there)."""
    if not cases.node:
        return {}

    def struct(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float | dict | list):
            return value
        if isinstance(value, dict):
            return {str(k): struct(v) for k, v in value.items()}
        if isinstance(value, list):
            return [struct(v) for v in value]
        return float(value)

    return {"xds.node": {"id": cases.node["id"], "metadata": struct(cases.node["metadata"])}}


def start_plugin(wasm: Path | WasmModule, cases: CaseFile) -> Plugin:
    """Load the filter into a fresh host configured as the Envoy side is."""
    host = Host(log_level=cases.log_level, clusters=set(cases.clusters), properties=node_properties(cases))
    module = wasm if isinstance(wasm, WasmModule) else load_module(wasm)
    if cases.singleton is not None:  # Envoy starts bootstrap extensions before any listener
        single = cases.singleton
        host.load(
            load_module(single.file) if single.file is not None else module,
            configuration=single.configuration,
            root_id=single.root_id,
            vm_id=cases.vm_id,
            name=f"{cases.name}_singleton",
        )
    return host.load(
        module,
        configuration=cases.configuration,
        vm_configuration=cases.vm_configuration,
        root_id=cases.root_id,
        vm_id=cases.vm_id,
        name=cases.name,
        failure_policy=cases.failure_policy,
        reload_backoff_ms=cases.reload_backoff_ms,
    )


def between_cases(plugin: Plugin, cases: CaseFile, wait_ms: int = 0) -> None:
    """Time passing before a case, as far as it matters: the case's own ``wait_ms``, and with
    FAIL_RELOAD and a short backoff, past the longest backoff (Envoy runs its cases more than
    1.5 * a 2..20 ms backoff apart, and well within a long one)."""
    step: float = wait_ms
    if cases.failure_policy == "FAIL_RELOAD" and cases.reload_backoff_ms <= 20:
        step += cases.reload_backoff_ms * 1.5
    if step:
        plugin.host.advance(step)


def observe(outcome: Outcome) -> Observation:
    """The client's and upstream's view of one exchange, plus the filter's logs."""
    obs = Observation(
        status=outcome.status,
        headers=[
            (k, v) for k, v in outcome.headers.items() if not k.startswith(":") and k not in CLIENT_IGNORED
        ],
        body=outcome.body,
        logs=[(LEVEL_NAMES[int(r.level)], r.message) for r in outcome.logs],
    )
    # A request stopped after its headers went upstream: whether the upstream saw them depends on
    # Envoy having a pooled connection ready at that instant, so that part is not compared.
    obs.upstream_cut = outcome.upstream_headers is not None and not outcome.upstream_complete
    if outcome.upstream_headers is not None:
        h = outcome.upstream_headers
        headers = [("host", h.get(":authority") or "")]
        headers += [(k, v) for k, v in h.items() if not k.startswith(":")]
        obs.upstream = (h.get(":method") or "", h.get(":path") or "", headers, outcome.upstream_body or b"")
    return obs


def run_case(plugin: Plugin, case: Case, cases: CaseFile) -> Observation:
    """One case through the filter in the host."""
    between_cases(plugin, cases, case.wait_ms)
    request = case.request
    if cases.before_headers or cases.before_buffer:
        request = dataclasses.replace(
            request, added_by_filters=list(cases.before_headers), buffered_by_filters=cases.before_buffer
        )
    return observe(run_exchange(plugin, request, case.upstream, callouts=dict(cases.clusters)))
