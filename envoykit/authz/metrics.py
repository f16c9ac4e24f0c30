"""Prometheus metrics of the authz server (names follow ``envoykit_authz_*``).

Label values are bounded: ``rule`` takes rule names from the loaded policy or a fixed ``<...>`` marker.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DECISIONS = Counter(
    "envoykit_authz_decisions",
    "Authorization decisions by result (allow, deny, dry_run_deny) and deciding rule.",
    ["result", "rule"],
)
RULE_ERRORS = Counter("envoykit_authz_rule_errors", "Rules that raised or overran their budget.", ["rule"])
CHECK_SECONDS = Histogram(
    "envoykit_authz_check_duration_seconds",
    "Time to decide one Check call, in seconds.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
INTERNAL_ERRORS = Counter(
    "envoykit_authz_internal_errors", "Failures inside the server answered as an in-band deny."
)
EMPTIED_REFUSED = Counter(
    "envoykit_authz_policy_emptied_refused",
    "Reloads refused because they would empty the serving policy (every rule or file, a file's rules,"
    " or authn.yaml): the signature of a file caught half-written.",
)
