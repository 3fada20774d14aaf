"""The chat endpoints of both dialects: parse at the edge, run the pipeline, render in the caller's dialect."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tiergate.accounting.schema import LedgerRow
from tiergate.api.edges import ANTHROPIC, OPENAI, Edge
from tiergate.api.intake import off_loop_parse, parse, read_body
from tiergate.api.refusal import refusal_response
from tiergate.api.state import AppState
from tiergate.errors import RateLimited, TiergateError, UpstreamError
from tiergate.pipeline.account import Account, Produced
from tiergate.pipeline.gateway import Outcome
from tiergate.signals.sovereignty import HEADER as SOVEREIGN_HEADER
from tiergate.tokens import estimate_prompt_tokens
from tiergate.types import ChatRequest, EventStream, StreamEnd, Usage

log = logging.getLogger("tiergate.requests")
NO_COST = f"{0.0:.8f}"


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


def error_response(edge: Edge, exc: TiergateError, request_id: str, headers: dict[str, str] | None = None) -> Response:
    """``exc`` in the caller's envelope. Nothing is billed for an error: ``x-tiergate-cost-usd`` is 0."""
    body = json.dumps(edge.render_error(exc)).encode()
    out = {"x-request-id": request_id, "x-tiergate-cost-usd": NO_COST, **(headers or {})}
    if isinstance(exc, UpstreamError) and exc.backend:
        out.setdefault("x-tiergate-backend", exc.backend)
    retry_after = exc.retry_after if isinstance(exc, UpstreamError | RateLimited) else None
    if retry_after is not None and exc.status in (429, 503):
        out["retry-after"] = str(math.ceil(retry_after))
    return Response(body, status_code=exc.status, media_type="application/json", headers=out)


def error_headers(row: LedgerRow) -> dict[str, str]:
    """An error answer's ``x-tiergate-*`` headers: its ledger row's values (failed attempts are not billed)."""
    headers = {"x-tiergate-cost-usd": NO_COST}
    for name, value in (("tier", row.tier), ("backend", row.backend), ("route", row.route)):
        if value:
            headers[f"x-tiergate-{name}"] = value
    return headers


def route_headers(outcome: Outcome, request_id: str, cost_usd: float) -> dict[str, str]:
    return {
        "x-request-id": request_id,
        "x-tiergate-tier": outcome.tier.value,
        "x-tiergate-backend": outcome.backend.name,
        "x-tiergate-route": outcome.route,
        "x-tiergate-cost-usd": f"{cost_usd:.8f}",
    }


async def handle(request: Request, edge: Edge) -> Response:
    state: AppState = request.app.state.tiergate
    call = Account(state, edge.dialect, new_request_id(), time.perf_counter())
    limits = state.config.server
    try:
        caller = state.keys.caller(request.headers)
        call.caller = caller.name
        body = await read_body(request, limits.max_body_bytes)
        chat = await off_loop_parse(state.parsing, len(body), parse, edge, body, request.headers, state.config)
        call.model = chat.model
        headers = request.headers
        plan = await state.gateway.plan(chat, caller, headers.get("x-tiergate-tier"), headers.get(SOVEREIGN_HEADER))
        call.plan = plan  # until admitted: a 429 is attributed to the plan it refused
        admitted = state.admission.admit(caller, chat, plan)
        plan = call.plan = admitted.plan
        call.reservation = admitted.reservation
        if plan.refusal is not None:
            call.record_refusal(plan)
            return refusal_response(edge, chat, plan, call.request_id)
        if chat.stream:
            _, events, outcome = await state.gateway.stream(chat, plan)
            return _stream(call, edge, chat, events, outcome)
        response, outcome = await state.gateway.complete(chat, plan)
    except TiergateError as exc:
        return error_response(edge, exc, call.request_id, error_headers(call.record_error(exc)))
    except Exception:  # a bug of ours: still the caller's envelope, a ledger row, and the budget settled
        log.exception("request %s failed inside the gateway", call.request_id)
        internal = TiergateError(f"internal error in the gateway (request id {call.request_id})")
        return error_response(edge, internal, call.request_id, error_headers(call.record_error(internal)))
    cost = call.record(outcome, response.usage, "ok")
    payload = json.dumps(edge.render(response, call.request_id), separators=(",", ":")).encode()
    return Response(payload, media_type="application/json", headers=route_headers(outcome, call.request_id, cost))


def _stream(call: Account, edge: Edge, chat: ChatRequest, events: EventStream, outcome: Outcome) -> Response:
    prompt_tokens = estimate_prompt_tokens(chat)  # a header-time estimate; the ledger has the truth
    renderer = edge.renderer(call.request_id, outcome.backend.backend.model, chat, prompt_tokens)
    estimate = call.books.costs.cost(outcome.backend.config, Usage(input_tokens=prompt_tokens, estimated=True))
    headers = route_headers(outcome, call.request_id, estimate.usd)

    async def body() -> AsyncIterator[bytes]:
        final: Usage | None = None  # the backend's own usage, from the stream's final event
        status, ttft, produced = "error", None, Produced()
        try:
            yield renderer.start()
            ttft = time.perf_counter() - call.started
            async for ev in events:  # starts with ``first``: the stream the dispatcher opened
                if isinstance(ev, StreamEnd):
                    final, status = ev.usage, "ok"
                    yield renderer.event(ev)
                    break
                produced.add(ev)
                yield renderer.event(ev)
            else:
                yield renderer.error(UpstreamError("stream ended without a final event", backend=outcome.backend.name))
        except UpstreamError as exc:
            log.warning("stream from %s failed after bytes were sent: %s", outcome.backend.name, exc.message)
            yield renderer.error(exc)
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"  # the client went away: closing ``events`` below cancels the upstream request
            raise
        finally:
            try:
                await events.aclose()
            finally:  # accounted even if closing the upstream fails or is cancelled in its turn
                if final is not None:
                    call.record(outcome, final, status, ttft)
                else:
                    call.record_cut(outcome, chat, produced, status, ttft)

    return StreamingResponse(body(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})


async def chat_completions(request: Request) -> Response:
    return await handle(request, OPENAI)


async def messages(request: Request) -> Response:
    return await handle(request, ANTHROPIC)
