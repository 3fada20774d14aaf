"""The chat endpoints of both dialects: parse at the edge, run the gateway, render in the caller's dialect."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tiergate.accounting.budgets import Reservation
from tiergate.accounting.schema import LedgerRow, status_of
from tiergate.api.edges import ANTHROPIC, OPENAI, Edge
from tiergate.api.limits import admit
from tiergate.api.refusal import refusal_response
from tiergate.api.state import AppState
from tiergate.errors import PayloadTooLarge, RateLimited, TiergateError, UpstreamError
from tiergate.gateway import Outcome, Plan
from tiergate.signals.sovereignty import HEADER as SOVEREIGN_HEADER
from tiergate.types import ChatRequest, EventStream, StreamEnd, Usage

log = logging.getLogger("tiergate.requests")


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over this gateway's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over this gateway's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(edge: Edge, exc: TiergateError, request_id: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(edge.render_error(exc)).encode()
    out = {"x-request-id": request_id, **(headers or {})}
    if isinstance(exc, UpstreamError):
        out.setdefault("x-tiergate-backend", exc.backend)
        if exc.retry_after is not None and exc.status in (429, 503):
            out["retry-after"] = str(int(exc.retry_after + 0.999))
    return Response(body, status_code=exc.status, media_type="application/json", headers=out)


def route_headers(outcome: Outcome, request_id: str, cost_usd: float) -> dict[str, str]:
    return {
        "x-request-id": request_id,
        "x-tiergate-tier": outcome.tier.value,
        "x-tiergate-backend": outcome.backend.name,
        "x-tiergate-route": outcome.route,
        "x-tiergate-cost-usd": f"{cost_usd:.8f}",
    }


@dataclass(slots=True)
class Call:
    """One request in flight: what accounting needs when it ends."""

    state: AppState
    edge: Edge
    request_id: str
    started: float
    caller: str = ""
    model: str = ""
    reservation: Reservation | None = None

    def record(self, outcome: Outcome, usage: Usage, status: str, ttft: float | None = None) -> float:
        m, cfg = self.state.metrics, outcome.backend.config
        cost = self.state.costs.charge(cfg, usage)  # open backends: amortised at measured utilisation
        tier, name = cfg.tier.value, cfg.name
        elapsed = time.perf_counter() - self.started
        m.requests.labels(self.edge.dialect.value, tier, name, status).inc()
        m.latency.labels(self.edge.dialect.value, tier, name).observe(elapsed)
        m.tokens.labels(tier, name, "input").inc(usage.input_tokens)
        m.tokens.labels(tier, name, "output").inc(usage.output_tokens)
        m.cost.labels(tier, name).inc(cost.usd)
        if ttft is not None:
            m.ttft.labels(tier, name).observe(ttft)
        if outcome.failovers:
            m.failovers.labels(tier).inc()
        self.state.budgets.settle(self.reservation, cost.usd, usage.input_tokens + usage.output_tokens)
        self.state.ledger.record(
            LedgerRow(
                request_id=self.request_id,
                key_name=self.caller,
                dialect=self.edge.dialect.value,
                model=self.model,
                tier=tier,
                backend=name,
                route=outcome.route,
                status=status_of(status),
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cost_usd=cost.usd,
                counterfactual_usd=cost.counterfactual_usd,
                latency_ms=elapsed * 1000,
                ttft_ms=None if ttft is None else ttft * 1000,
                failovers=len(outcome.failovers),
                estimated=usage.estimated,
                marginal_usd=cost.marginal_usd,
                utilisation=cost.utilisation,
            )
        )
        return cost.usd

    def record_refusal(self, plan: Plan) -> None:
        """A request the hard policy refused (HTTP 200 with a refusal): counted and in the ledger."""
        self.state.metrics.requests.labels(self.edge.dialect.value, plan.tier.value, "none", "refused").inc()
        self.state.budgets.settle(self.reservation, 0.0, 0)
        self.state.ledger.record(
            LedgerRow(
                request_id=self.request_id,
                key_name=self.caller,
                dialect=self.edge.dialect.value,
                model=self.model,
                tier=plan.tier.value,
                backend=None,
                route=plan.route,
                status="refused",
                http_status=200,
                latency_ms=(time.perf_counter() - self.started) * 1000,
            )
        )

    def record_error(self, exc: TiergateError) -> None:
        backend = getattr(exc, "backend", "") or "none"
        self.state.metrics.requests.labels(self.edge.dialect.value, "none", backend, str(exc.status)).inc()
        self.state.budgets.settle(self.reservation, 0.0, 0)
        self.state.ledger.record(
            LedgerRow(
                request_id=self.request_id,
                key_name=self.caller,
                dialect=self.edge.dialect.value,
                model=self.model,
                tier=None,
                backend=None if backend == "none" else backend,
                route="",
                status="refused" if isinstance(exc, RateLimited) else "error",
                http_status=exc.status,
                latency_ms=(time.perf_counter() - self.started) * 1000,
            )
        )


async def handle(request: Request, edge: Edge) -> Response:
    state: AppState = request.app.state.tiergate
    call = Call(state, edge, new_request_id(), time.perf_counter())
    limits = state.config.server
    try:
        caller = state.keys.caller(request.headers)
        call.caller = caller.name
        body = await read_body(request, limits.max_body_bytes)
        chat = edge.parse(body, request.headers, limits.max_tokens_limit)
        call.model = chat.model
        headers = request.headers
        plan = await state.gateway.plan(chat, caller, headers.get("x-tiergate-tier"), headers.get(SOVEREIGN_HEADER))
        plan, call.reservation = admit(state, caller, chat, plan)
        if plan.refusal is not None:
            call.record_refusal(plan)
            return refusal_response(edge, chat, plan, call.request_id)
        if chat.stream:
            _, events, outcome = await state.gateway.stream(chat, plan)
            return _stream(call, chat, events, outcome)
        response, outcome = await state.gateway.complete(chat, plan)
    except TiergateError as exc:
        call.record_error(exc)
        return error_response(edge, exc, call.request_id)
    except Exception:  # a bug of ours: still the caller's envelope, a ledger row, and the budget settled
        log.exception("request %s failed inside the gateway", call.request_id)
        internal = TiergateError(f"internal error in the gateway (request id {call.request_id})")
        call.record_error(internal)
        return error_response(edge, internal, call.request_id)
    cost = call.record(outcome, response.usage, "ok")
    payload = json.dumps(edge.render(response, call.request_id), separators=(",", ":")).encode()
    return Response(payload, media_type="application/json", headers=route_headers(outcome, call.request_id, cost))


def _stream(call: Call, chat: ChatRequest, events: EventStream, outcome: Outcome) -> Response:
    prompt_tokens = sum(len(t) for t in chat.texts()) // 4  # a header-time estimate; the ledger has the truth
    renderer = call.edge.renderer(call.request_id, outcome.backend.backend.model, chat, prompt_tokens)
    estimate = call.state.costs.cost(outcome.backend.config, Usage(input_tokens=prompt_tokens, estimated=True))
    headers = route_headers(outcome, call.request_id, estimate.usd)

    async def body() -> AsyncIterator[bytes]:
        usage, status, ttft, produced = Usage(estimated=True), "error", None, 0
        try:
            yield renderer.start()
            ttft = time.perf_counter() - call.started
            async for ev in events:  # starts with ``first``: the stream the dispatcher opened
                if isinstance(ev, StreamEnd):
                    usage, status = ev.usage, "ok"
                    yield renderer.event(ev)
                    break
                produced += 1
                yield renderer.event(ev)
            else:
                yield renderer.error(UpstreamError("stream ended without a final event", backend=outcome.backend.name))
        except UpstreamError as exc:
            log.warning("stream from %s failed after bytes were sent: %s", outcome.backend.name, exc.message)
            yield renderer.error(exc)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: closing ``events`` below cancels the upstream request at once.
            status = "cancelled"
            usage = Usage(input_tokens=prompt_tokens, output_tokens=produced, estimated=True)
            raise
        finally:
            await events.aclose()
            call.record(outcome, usage, status, ttft)

    return StreamingResponse(body(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})


async def chat_completions(request: Request) -> Response:
    return await handle(request, OPENAI)


async def messages(request: Request) -> Response:
    return await handle(request, ANTHROPIC)
