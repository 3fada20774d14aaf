"""Operational endpoints: models, liveness, readiness, Prometheus metrics, token counting."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tiergate.accounting.metrics import CIRCUIT_STATES
from tiergate.api.chat import error_response, new_request_id
from tiergate.api.edges import ANTHROPIC, OPENAI
from tiergate.api.intake import decode, off_loop_parse, read_body
from tiergate.api.openapi import document
from tiergate.api.state import AppState
from tiergate.config import LimitsConfig
from tiergate.dialects.anthropic import FORWARDED_HEADERS, convert_messages, system_text
from tiergate.dialects.anthropic_wire import ACountTokensRequest
from tiergate.dialects.common import validate
from tiergate.errors import TiergateError, UpstreamError
from tiergate.offload import off_loop
from tiergate.pipeline.policy import PolicyVerdict
from tiergate.signals.sovereignty import HEADER as SOVEREIGN_HEADER
from tiergate.tokens import estimate_prompt_tokens
from tiergate.types import ChatRequest, Tier, ToolSpec


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tiergate
    return state


async def models(request: Request) -> Response:
    state = _state(request)
    try:
        state.keys.caller(request.headers)
    except TiergateError as exc:
        edge = ANTHROPIC if "anthropic-version" in request.headers else OPENAI
        return error_response(edge, exc, new_request_id())
    data = [
        {
            "id": name,
            "object": "model",
            "type": "model",
            "created": 0,
            "created_at": "1970-01-01T00:00:00Z",
            "display_name": name,
            "owned_by": "tiergate",
        }
        for name in state.gateway.models()
    ]
    return JSONResponse(
        {"object": "list", "data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    )


async def openapi(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(document(state.gateway.models()))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)
    now = time.monotonic()
    backends = {
        s.name: {
            "tier": s.config.tier.value,
            "kind": s.config.kind,
            "healthy": s.healthy,
            "circuit": s.breaker.state,
            "in_flight": s.in_flight,
            "resting_s": round(max(0.0, s.resting_until - now), 3),  # left of the pause its Retry-After asked for
            "last_error": s.last_error,
            **s.backend.status(),
        }
        for s in state.pool.states.values()
    }
    ready = state.ready and any(b["healthy"] for b in backends.values())
    return JSONResponse({"ready": ready, "backends": backends}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    state = _state(request)
    for s in state.pool.states.values():
        tier, circuit = s.config.tier.value, s.breaker.state
        state.metrics.backend_up.labels(s.name, tier).set(1 if s.healthy and circuit != "open" else 0)
        state.metrics.in_flight.labels(s.name, tier).set(s.in_flight + s.waiting)
        for name in CIRCUIT_STATES:
            state.metrics.circuit.labels(s.name, tier, name).set(1 if circuit == name else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def count_tokens(request: Request) -> Response:
    state = _state(request)
    rid = new_request_id()
    try:
        caller = state.keys.caller(request.headers)
        body = await read_body(request, state.config.server.max_body_bytes)
        forward = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        chat = await off_loop_parse(state.parsing, len(body), _count_request, body, forward, state.config.limits)
        verdict = await off_loop(
            len(body),
            state.gateway.policy.inspect,
            chat,
            key_sovereign=caller.sovereign,
            header=request.headers.get(SOVEREIGN_HEADER),
        )
        tokens = await _count(state, chat, verdict)
    except TiergateError as exc:
        return error_response(ANTHROPIC, exc, rid)
    return Response(json.dumps({"input_tokens": tokens}), media_type="application/json", headers={"x-request-id": rid})


def _count_request(body: bytes, forward: dict[str, str], limits: LimitsConfig) -> ChatRequest:
    wire = validate(ACountTokensRequest, decode(body, limits))
    return ChatRequest(
        model=wire.model,
        messages=convert_messages(wire.messages),
        system=system_text(wire.system),
        tools=tuple(ToolSpec(t.name, t.description or "", t.input_schema) for t in wire.tools or ()),
        forward_headers=forward,
    )


async def _count(state: AppState, chat: ChatRequest, verdict: PolicyVerdict) -> int:
    """Input tokens by the most authoritative counter (closed tier first), under the same hard policy as a chat:
    a sovereign prompt is only counted inside the perimeter, a redacted one leaves it only redacted."""
    outbound = state.gateway.policy.outbound(verdict)
    for tier in (Tier.CLOSED, Tier.OPEN):
        for backend in state.pool.tier(tier):
            if not backend.backend.capabilities.counts_tokens or not verdict.allows(backend):
                continue
            sent = outbound(backend, chat)[0] if outbound is not None else chat
            try:
                count = await backend.backend.count_tokens(sent)
            except UpstreamError:
                continue
            return count
    return max(1, estimate_prompt_tokens(chat))
