"""``envoykit wasm diff``: run the same requests through the Wasm host and a real Envoy, compare.

Public names::

    from envoykit.wasmdiff import (
        run_diff, DiffReport, CaseResult, load_cases, parse_cases, CasesError, EnvoyError, envoy_missing,
    )

Each case is observed from outside the filter on both sides: the status, headers and body the
client got, the request that reached the upstream, and the filter's log lines (see
:mod:`envoykit.wasmdiff.observe`); at the end, the filter's counters and gauges (Envoy's
``wasmcustom.*`` stats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from envoykit.core.envoy import EnvoyError, envoy_binary
from envoykit.wasmdiff.cases import CaseFile, CasesError, load_cases, parse_cases
from envoykit.wasmdiff.observe import Observation, differences


def envoy_missing() -> str | None:
    """Why no Envoy can run here (no binary), or ``None`` when one can."""
    try:
        envoy_binary()
    except EnvoyError as exc:
        return str(exc)
    return None


@dataclass
class CaseResult:
    """One case: both observations and what differs (empty: identical)."""

    name: str
    host: Observation
    envoy: Observation
    differences: list[str]


@dataclass
class DiffReport:
    """The result of a differential run.

    Attributes:
        cases: per-case results, in order.
        metrics: differences in counters/gauges after all cases (host vs Envoy ``wasmcustom.*``).
        host_seconds / envoy_seconds: time spent running the cases on each side (Envoy's
            start-up excluded).
    """

    cases: list[CaseResult] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    host_seconds: float = 0.0
    envoy_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every case and the metrics matched."""
        return not self.metrics and all(not c.differences for c in self.cases)

    def summary(self) -> str:
        """A short text report: one line per differing case and metric."""
        bad = [c for c in self.cases if c.differences]
        lines = [f"{len(self.cases) - len(bad)}/{len(self.cases)} cases identical in the host and in Envoy"]
        for c in bad:
            lines.append(f"- {c.name}:")
            lines += [f"    {d}" for d in c.differences]
        lines += [f"- metrics: {m}" for m in self.metrics]
        return "\n".join(lines)


def run_diff(
    wasm: str | Path, cases: CaseFile | str | Path, *, workdir: str | Path | None = None
) -> DiffReport:
    """Run every case in the host and in a real Envoy (V8) with the same filter and configuration.

    Raises:
        CasesError: the cases file is malformed.
        EnvoyError: Envoy refused the filter or its configuration.
        ModuleLoadError / FilterFailure: the host refused the module or it failed on start-up.
    """
    from envoykit.wasmdiff.envoy_side import EnvoyRunner
    from envoykit.wasmdiff.host_side import run_case, start_plugin
    from envoykit.wasmdiff.tcp_side import TcpEnvoyRunner, run_tcp_case

    case_file = cases if isinstance(cases, CaseFile) else load_cases(cases)
    tcp = case_file.protocol == "tcp"
    report = DiffReport()
    plugin = start_plugin(Path(wasm), case_file)
    host_obs = []
    t0 = time.perf_counter()
    for case in case_file.cases:
        host_obs.append(
            run_tcp_case(plugin, case.messages, case_file, case.wait_ms)
            if tcp
            else run_case(plugin, case, case_file)
        )
    report.host_seconds = time.perf_counter() - t0
    runner = TcpEnvoyRunner if tcp else EnvoyRunner
    with runner(Path(wasm), case_file, workdir=Path(workdir) if workdir else None) as envoy:
        t0 = time.perf_counter()
        for case, hobs in zip(case_file.cases, host_obs, strict=True):
            if case.wait_ms:
                time.sleep(case.wait_ms / 1000)  # the host moved its clock as much
            if isinstance(envoy, TcpEnvoyRunner):
                eobs = envoy.run_tcp(case.messages)
            else:
                eobs = envoy.run(case.request, case.upstream)
            report.cases.append(CaseResult(case.name, hobs, eobs, differences(hobs, eobs)))
        report.envoy_seconds = time.perf_counter() - t0
        stats = envoy.envoy.stats("wasmcustom.")
    host_metrics = {
        f"wasmcustom.{m.name}": m.value
        for m in plugin.host.metrics.by_name.values()
        if m.type.name != "HISTOGRAM"
    }
    for name in sorted(set(host_metrics) | set(stats)):
        if host_metrics.get(name) != stats.get(name):
            report.metrics.append(f"{name}: host {host_metrics.get(name)} != envoy {stats.get(name)}")
    return report


__all__ = [
    "CaseResult",
    "CasesError",
    "DiffReport",
    "EnvoyError",
    "envoy_missing",
    "load_cases",
    "parse_cases",
    "run_diff",
]
