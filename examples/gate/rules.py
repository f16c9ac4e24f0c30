"""The part of examples/gate that only Python can decide: who may see or place an order.

Each rule names the paths it applies to, so Envoy's native gate sends only those requests to the
server and decides the rest itself (docs/authz.md, "The native gate").
"""

from envoykit.authz import Request, allow_rule, deny, deny_rule


@deny_rule(paths=["/orders", "/orders/*"])
def orders_need_a_customer(req: Request):
    if not req.headers.get("x-customer", "").isalnum():
        return deny(401, "orders need an x-customer header\n")
    return None


@allow_rule(paths=["/orders", "/orders/*"], methods=["POST"])
def customers_place_orders(req: Request):
    return True
