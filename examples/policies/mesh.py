"""The demo mesh's authorization policy (examples/mesh.yaml wires every Envoy to this server).

* At the ingress gateway, ``/admin`` needs a token from the demo issuer (``envoykit token``).
* The backend accepts calls only from the frontend's SPIFFE identity (proved by mTLS).
* Upstreams receive who called them: ``x-envoykit-principal`` and, with a token, ``x-envoykit-user``.
"""

from envoykit.authz import Request, allow, allow_rule, deny, deny_rule

TRUST_DOMAIN = "envoykit.local"


def _service_account(principal_spiffe: object) -> str | None:
    sp = principal_spiffe
    if sp is None or getattr(sp, "trust_domain", None) != TRUST_DOMAIN:
        return None
    return getattr(sp, "service_account", None)


def _at_ingress(req: Request) -> bool:
    return req.context_extensions.get("gateway") == "ingress"


@deny_rule(paths=["/admin", "/admin/*"])
def admin_needs_token(req: Request):
    if _at_ingress(req) and req.identity.claims is None:
        return deny(
            401,
            '/admin needs a token: try -H "authorization: Bearer $(envoykit token)"\n',
            {"www-authenticate": 'Bearer realm="envoykit"'},
        )
    return None


@deny_rule()
def only_frontend_calls_backend(req: Request):
    if _service_account(req.destination_spiffe) != "backend":
        return None  # this rule is about the backend's sidecar only
    caller = _service_account(req.identity.spiffe)
    if caller != "frontend":
        who = req.identity.principal or "a caller without a mesh certificate"
        return deny(403, f"backend accepts calls from frontend only, not {who}\n")
    return None


@allow_rule()
def tell_upstream_who_called(req: Request):
    headers = {"x-envoykit-principal": req.identity.principal or "none"}
    if req.identity.claims is not None:
        headers["x-envoykit-user"] = str(req.identity.claims.get("sub", ""))
    return allow(headers)
