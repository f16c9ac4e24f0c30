"""envoykit.authz: an ext_authz server (``envoy.service.auth.v3.Authorization/Check``) with Python rules.

Public API for policy authors::

    from envoykit.authz import Request, allow, allow_rule, deny, deny_rule

See :mod:`envoykit.authz.rules` for how rules match and the evaluation order.
"""

from envoykit.authz.decisions import Allow, Deny, allow, deny
from envoykit.authz.engine import Engine, EngineSettings, Verdict
from envoykit.authz.identity import Identity
from envoykit.authz.loader import Policy, load_policy
from envoykit.authz.paths import normalize_path
from envoykit.authz.request import Headers, Request
from envoykit.authz.rules import Rule, allow_rule, deny_rule
from envoykit.core.spiffe import SpiffeId, peer_spiffe_id

__all__ = [
    "Allow",
    "Deny",
    "Engine",
    "EngineSettings",
    "Headers",
    "Identity",
    "Policy",
    "Request",
    "Rule",
    "SpiffeId",
    "Verdict",
    "allow",
    "allow_rule",
    "deny",
    "deny_rule",
    "load_policy",
    "normalize_path",
    "peer_spiffe_id",
]
