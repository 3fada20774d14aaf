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
from tiergate.api.intake import parse, read_body
from tiergate.api.refusal import refusal_response
from tiergate.api.state import AppState
from tiergate.errors import RateLimited, TiergateError, UpstreamError
from tiergate.learning.shadow import Learning
from tiergate.pipeline.account import Account, Produced
from tiergate.pipeline.gateway import Outcome
from tiergate.signals.sovereignty import HEADER as SOVEREIGN_HEADER
from tiergate.tokens import estimate_prompt_tokens
from tiergate.tracing import REQUEST_MAX_TOKENS, REQUEST_MODEL, REQUEST_STREAM, REQUEST_TEMPERATURE, REQUEST_TOP_P
from tiergate.types import ChatRequest, EventStream, StreamEnd, TextDelta, Usage

log = logging.getLogger("tiergate.requests")
NO_COST = f"{0.0:.8f}"


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


def error_response(edge: Edge, exc: TiergateError, request_id: str, headers: dict[str, str] | None = None) -> Response:
    """``exc`` in the caller's envelope. Nothing is billed for an error: ``x-tiergate-cost-usd`` is 0."""
    body = json.dumps(edge.render_error(exc)).encode()
    out = {**edge.ids(request_id), "x-tiergate-cost-usd": NO_COST, **(headers or {})}
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


def route_headers(edge: Edge, outcome: Outcome, request_id: str, cost_usd: float) -> dict[str, str]:
    headers = {
        **edge.ids(request_id),
        "x-tiergate-tier": outcome.tier.value,
        "x-tiergate-backend": outcome.backend.name,
        "x-tiergate-route": outcome.route,
        "x-tiergate-cost-usd": f"{cost_usd:.8f}",
    }
    if outcome.dropped:  # what the backend has no translation for: answered without it, and said so
        headers["x-tiergate-dropped"] = ",".join(outcome.dropped)
        log.info("request %s: %s answered without %s", request_id, outcome.backend.name, headers["x-tiergate-dropped"])
    return headers


async def handle(request: Request, edge: Edge) -> Response:
    state: AppState = request.app.state.tiergate
    call = Account(state, edge.dialect, new_request_id(), time.perf_counter())
    call.spans = state.tracing.start(edge.dialect.value, call.request_id, request.url.path)
    with call.spans.active():
        return await _handle(request, edge, state, call)


async def _handle(request: Request, edge: Edge, state: AppState, call: Account) -> Response:
    limits = state.config.server
    assert call.spans is not None
    try:
        caller = state.keys.caller(request.headers)
        call.caller = caller.name
        body = await read_body(request, limits.max_body_bytes)
        config = state.config
        chat = await state.parsers.run(
            len(body), parse, edge.parse, body, request.headers, config.limits, config.server.max_tokens_limit
        )
        call.model = chat.model
        call.spans.span.update_name(f"chat {chat.model}")
        call.spans.set(request_attributes(chat))
        headers = request.headers
        plan = await state.gateway.plan(chat, caller, headers.get("x-tiergate-tier"), headers.get(SOVEREIGN_HEADER))
        call.plan = plan  # until admitted: a 429 is attributed to the plan it refused
        admitted = await state.admission.admit(caller, chat, plan)
        plan = call.plan = admitted.plan
        call.reservation = admitted.reservation
        if plan.refusal is not None:
            call.record_refusal(plan)
            return refusal_response(edge, chat, plan, call.request_id)
        if chat.stream:
            _, events, outcome = await state.gateway.stream(chat, plan)
            return _stream(call, edge, chat, events, outcome, state.learning)
        response, outcome = await state.gateway.complete(chat, plan)
    except TiergateError as exc:
        return error_response(edge, exc, call.request_id, error_headers(call.record_error(exc)))
    except Exception:  # a bug of ours: still the caller's envelope, a ledger row, and the budget settled
        log.exception("request %s failed inside the gateway", call.request_id)
        internal = TiergateError(f"internal error in the gateway (request id {call.request_id})")
        return error_response(edge, internal, call.request_id, error_headers(call.record_error(internal)))
    cost = call.record(outcome, response.usage, "ok")
    payload = json.dumps(edge.render(response, call.request_id), separators=(",", ":")).encode()
    # A shadow pair, when drawn, starts once this answer is sent (it never delays or changes it).
    learning = state.learning
    shadow = learning.after(call.request_id, call.caller, chat, plan, outcome, response) if learning else None
    answered = route_headers(edge, outcome, call.request_id, cost)
    return Response(payload, media_type="application/json", headers=answered, background=shadow)


def request_attributes(chat: ChatRequest) -> dict[str, object]:
    """The GenAI semconv's request attributes of the request span (never the prompt itself)."""
    return {
        REQUEST_MODEL: chat.model,
        REQUEST_MAX_TOKENS: chat.max_tokens,
        REQUEST_TEMPERATURE: chat.temperature,
        REQUEST_TOP_P: chat.top_p,
        REQUEST_STREAM: chat.stream,
    }


def _stream(
    call: Account, edge: Edge, chat: ChatRequest, events: EventStream, outcome: Outcome, learning: Learning | None
) -> Response:
    prompt_tokens = estimate_prompt_tokens(chat)  # a header-time estimate; the ledger has the truth
    plan = call.plan
    ticket = learning.select(call.request_id, call.caller, chat, plan, outcome) if learning and plan else None
    renderer = edge.renderer(call.request_id, outcome.backend.backend.model, chat, prompt_tokens)
    estimate = call.books.costs.cost(
        outcome.backend.config, Usage(input_tokens=prompt_tokens, estimated=True), outcome.model
    )
    headers = route_headers(edge, outcome, call.request_id, estimate.usd)

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
                if ticket is not None and isinstance(ev, TextDelta):
                    ticket.answer.append(ev.text)
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
                if ticket is not None and learning is not None and status == "ok":
                    learning.launch(ticket)  # the stream is complete: the caller has every byte

    return StreamingResponse(body(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})


async def chat_completions(request: Request) -> Response:
    return await handle(request, OPENAI)


async def messages(request: Request) -> Response:
    return await handle(request, ANTHROPIC)
