"""Operational endpoints: models, liveness, readiness, Prometheus metrics, token counting."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tiergate.accounting.metrics import CIRCUIT_STATES
from tiergate.api.chat import error_response, new_request_id
from tiergate.api.edges import ANTHROPIC, edge_for_headers
from tiergate.api.intake import decode, read_body
from tiergate.api.openapi import document
from tiergate.api.state import AppState
from tiergate.config import LimitsConfig
from tiergate.dialects.anthropic import parse_count_request
from tiergate.errors import TiergateError, UpstreamError
from tiergate.offload import off_loop
from tiergate.pipeline.policy import PolicyVerdict
from tiergate.signals.sovereignty import HEADER as SOVEREIGN_HEADER
from tiergate.tokens import estimate_prompt_tokens
from tiergate.types import ChatRequest, Tier


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tiergate
    return state


def model_json(name: str) -> dict[str, object]:
    """A model as both SDKs read it: OpenAI's ``id``, ``object``, ``created``, ``owned_by``; Anthropic's ``id``,
    ``type``, ``display_name``, ``created_at``."""
    return {
        "id": name,
        "object": "model",
        "type": "model",
        "created": 0,
        "created_at": "1970-01-01T00:00:00Z",
        "display_name": name,
        "owned_by": "tiergate",
    }


async def models(request: Request) -> Response:
    state = _state(request)
    edge = edge_for_headers(request.headers)
    rid = new_request_id()
    try:
        state.keys.caller(request.headers)
    except TiergateError as exc:
        return error_response(edge, exc, rid)
    data = [model_json(name) for name in state.gateway.models()]
    return JSONResponse(
        {"object": "list", "data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]},
        headers=edge.ids(rid),
    )


async def model(request: Request) -> Response:
    """``GET /v1/models/{id}`` (both SDKs' ``models.retrieve``): any name a request may use, a Claude model's
    included; another is a 404 in the caller's envelope naming what is served."""
    state = _state(request)
    edge = edge_for_headers(request.headers)
    rid = new_request_id()
    try:
        state.keys.caller(request.headers)
        name = request.path_params["model_id"]
        state.gateway.names.resolve(name)
    except TiergateError as exc:
        return error_response(edge, exc, rid)
    return JSONResponse(model_json(name), headers=edge.ids(rid))


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
    # Shared limits that cannot reach Redis do not make a replica unready: every replica shares that Redis, and
    # each serves on as redis.on_unavailable says; the state is here, in the metrics and in the log.
    body = {"ready": ready, "backends": backends, "limits": state.budgets.status()}
    return JSONResponse(body, status_code=200 if ready else 503)


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
        limits = state.config.limits
        chat = await state.parsers.run(len(body), count_request, body, request.headers, limits)
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
    return Response(json.dumps({"input_tokens": tokens}), media_type="application/json", headers=ANTHROPIC.ids(rid))


def count_request(body: bytes, headers: Mapping[str, str], limits: LimitsConfig) -> ChatRequest:
    """A ``count_tokens`` body decoded and parsed (module-level: it may run in a worker process)."""
    return parse_count_request(decode(body, limits), headers)


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
