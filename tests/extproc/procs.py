"""Processors used by the extproc tests (loaded by module path, as users load theirs)."""

from __future__ import annotations

import asyncio

from envoykit.extproc import Exchange, Processor, processor

add_header = processor("add-header")


@add_header.on_request_headers
def _add(ex: Exchange) -> None:
    ex.set_header("x-processed-by", "envoykit")
    ex.set_header("x-seen-path", ex.headers.get(":path", "") if ex.headers else "")
    ex.state["path"] = ex.headers.get(":path") if ex.headers else None


@add_header.on_response_headers
async def _resp(ex: Exchange) -> None:
    await asyncio.sleep(0)
    ex.set_header("x-request-path", ex.state.get("path") or "none")


class Gate(Processor):
    """Answers 403 to /deny, and raises on /boom (tests both failure modes)."""

    name = "gate"

    def on_request_headers(self, ex: Exchange) -> None:
        path = ex.headers.get(":path", "") if ex.headers else ""
        if path.startswith("/deny"):
            ex.respond(403, "denied by gate\n", {"x-denied": "1"})
        ex.set_header("x-gate", "passed")
        if path.startswith("/boom"):
            raise RuntimeError("gate exploded")


class StrictGate(Gate):
    name = "strict-gate"
    failure_mode = "reject"


class Upper(Processor):
    """Upper-cases request bodies chunk by chunk (length-preserving) and doubles response bodies."""

    name = "upper"

    def on_request_body(self, ex: Exchange) -> None:
        ex.set_body(ex.body.upper() + b"!" if ex.end_of_stream else ex.body.upper())

    def on_response_body(self, ex: Exchange) -> None:
        ex.set_body(ex.body * 2)


chain = [add_header, Gate]


class Slow(Processor):
    """Holds request headers for ``x-hold-ms`` milliseconds (to kill the server mid-stream)."""

    name = "slow"

    async def on_request_headers(self, ex: Exchange) -> None:
        hold = ex.headers.get("x-hold-ms") if ex.headers else None
        if hold:
            await asyncio.sleep(int(hold) / 1000)


class Steer(Processor):
    """Uses the rest of the ext_proc protocol: mode_override, override_message_timeout, metadata."""

    name = "steer"

    async def on_request_headers(self, ex: Exchange) -> None:
        ex.set_metadata("envoykit", "user", "alice")
        if ex.headers is not None and ex.headers.get("x-buffer-response"):
            ex.override_mode(response_body_mode="BUFFERED")
        hold = ex.headers.get("x-hold-ms") if ex.headers else None
        if hold:
            if ex.headers is not None and ex.headers.get("x-extend"):
                await ex.extend_timeout(6000)
            await asyncio.sleep(int(hold) / 1000)

    def on_response_body(self, ex: Exchange) -> None:
        ex.set_body(b"[" + ex.body + b"]")
