"""The chat endpoints of both dialects: parse at the edge, run the gateway, render in the caller's dialect."""

from __future__ import annotations

import asyncio
import json
import logging
import math
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
from tiergate.tokens import estimate_prompt_tokens, estimate_tokens
from tiergate.types import ChatRequest, EventStream, StreamEnd, StreamEvent, TextDelta, ToolArgsDelta, Usage

log = logging.getLogger("tiergate.requests")
#: How long the accounting of a cut stream may wait for the backend's own prompt count.
COUNT_TIMEOUT_S = 5.0
NO_COST = f"{0.0:.8f}"


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
    """``exc`` in the caller's envelope. Nothing is billed for an error: ``x-tiergate-cost-usd`` is 0."""
    body = json.dumps(edge.render_error(exc)).encode()
    out = {"x-request-id": request_id, "x-tiergate-cost-usd": NO_COST, **(headers or {})}
    if isinstance(exc, UpstreamError) and exc.backend:
        out.setdefault("x-tiergate-backend", exc.backend)
    retry_after = exc.retry_after if isinstance(exc, UpstreamError | RateLimited) else None
    if retry_after is not None and exc.status in (429, 503):
        out["retry-after"] = str(math.ceil(retry_after))
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
class Produced:
    """What a stream delivered before it was cut: deltas and their characters."""

    deltas: int = 0
    chars: int = 0

    def add(self, ev: StreamEvent) -> None:
        if isinstance(ev, TextDelta):
            self.deltas, self.chars = self.deltas + 1, self.chars + len(ev.text)
        elif isinstance(ev, ToolArgsDelta):
            self.deltas, self.chars = self.deltas + 1, self.chars + len(ev.partial_json)

    @property
    def tokens(self) -> int:
        """One token a delta (llama.cpp, vLLM), or four characters a token where deltas are longer (Claude)."""
        return max(self.deltas, estimate_tokens(self.chars))


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
    #: Where the request was meant to go, once decided: errors are attributed to it.
    plan: Plan | None = None

    def record(
        self, outcome: Outcome, usage: Usage, status: str, ttft: float | None = None, elapsed: float | None = None
    ) -> float:
        m, cfg = self.state.metrics, outcome.backend.config
        cost = self.state.costs.charge(cfg, usage)  # open backends: amortised at measured utilisation
        tier, name, dialect = cfg.tier.value, cfg.name, self.edge.dialect.value
        elapsed = time.perf_counter() - self.started if elapsed is None else elapsed
        m.requests.labels(dialect, tier, name, status).inc()
        m.latency.labels(dialect, tier, name, status).observe(elapsed)
        m.tokens.labels(tier, name, "input", status).inc(usage.input_tokens)
        m.tokens.labels(tier, name, "output", status).inc(usage.output_tokens)
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
                dialect=dialect,
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

    def record_cut(
        self, outcome: Outcome, chat: ChatRequest, produced: Produced, status: str, ttft: float | None
    ) -> None:
        """A stream that ended without its final usage (the client hung up, or it broke after bytes were sent).

        Output: the deltas delivered (:class:`Produced`). Input: the backend's own count of the prompt where it
        has one (Claude's count-tokens endpoint, llama.cpp's tokenizer), else four characters a token. The
        count may take a round trip, so it runs off the request, as a task the app waits for at shutdown.
        """
        elapsed = time.perf_counter() - self.started
        output = produced.tokens
        backend = outcome.backend.backend
        if not backend.capabilities.counts_tokens:
            usage = Usage(input_tokens=estimate_prompt_tokens(chat), output_tokens=output, estimated=True)
            self.record(outcome, usage, status, ttft, elapsed)
            return
        plan = self.plan

        async def settle() -> None:
            prompt = estimate_prompt_tokens(chat)
            try:
                # The prompt as this backend received it: redacted where the plan redacts for it.
                sent = plan.prepare(outcome.backend, chat)[0] if plan is not None and plan.prepare else chat
                async with asyncio.timeout(COUNT_TIMEOUT_S):
                    prompt = int(await backend.count_tokens(sent))
            except Exception as exc:  # accounting must not be lost: fall back to the estimate
                log.info("request %s: no prompt count from %s (%s)", self.request_id, outcome.backend.name, exc)
            usage = Usage(input_tokens=prompt, output_tokens=output, estimated=True)
            self.record(outcome, usage, status, ttft, elapsed)

        self.state.spawn(settle())

    def record_refusal(self, plan: Plan) -> None:
        """A request the hard policy refused (HTTP 200 with a refusal): counted and in the ledger."""
        elapsed = time.perf_counter() - self.started
        labels = (self.edge.dialect.value, plan.tier.value, "none", "refused")
        self.state.metrics.requests.labels(*labels).inc()
        self.state.metrics.latency.labels(*labels).observe(elapsed)
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
                latency_ms=elapsed * 1000,
            )
        )

    def where(self, exc: TiergateError) -> tuple[str | None, str | None]:
        """The (tier, backend) an error happened on, where known: the backend that failed, else the plan's tier."""
        backend = getattr(exc, "backend", "") or None
        state = self.state.pool.get(backend) if backend else None
        if state is not None:
            return state.config.tier.value, backend
        return (self.plan.tier.value if self.plan is not None else None), backend

    def record_error(self, exc: TiergateError) -> dict[str, str]:
        """Count and record an error answer; returns its ``x-tiergate-*`` headers (the ledger row's values)."""
        tier, backend = self.where(exc)
        route = self.plan.route if self.plan is not None else ""
        elapsed = time.perf_counter() - self.started
        labels = (self.edge.dialect.value, tier or "none", backend or "none", str(exc.status))
        self.state.metrics.requests.labels(*labels).inc()
        self.state.metrics.latency.labels(*labels).observe(elapsed)
        self.state.budgets.settle(self.reservation, 0.0, 0)
        self.state.ledger.record(
            LedgerRow(
                request_id=self.request_id,
                key_name=self.caller,
                dialect=self.edge.dialect.value,
                model=self.model,
                tier=tier,
                backend=backend,
                route=route,
                status="refused" if isinstance(exc, RateLimited) else "error",
                http_status=exc.status,
                latency_ms=elapsed * 1000,
            )
        )
        headers = {"x-tiergate-cost-usd": NO_COST}  # failed attempts are not billed: the row's cost is 0 too
        for name, value in (("tier", tier), ("backend", backend), ("route", route)):
            if value:
                headers[f"x-tiergate-{name}"] = value
        return headers


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
        call.plan = plan
        plan, call.reservation = admit(state, caller, chat, plan)
        call.plan = plan
        if plan.refusal is not None:
            call.record_refusal(plan)
            return refusal_response(edge, chat, plan, call.request_id)
        if chat.stream:
            _, events, outcome = await state.gateway.stream(chat, plan)
            return _stream(call, chat, events, outcome)
        response, outcome = await state.gateway.complete(chat, plan)
    except TiergateError as exc:
        return error_response(edge, exc, call.request_id, call.record_error(exc))
    except Exception:  # a bug of ours: still the caller's envelope, a ledger row, and the budget settled
        log.exception("request %s failed inside the gateway", call.request_id)
        internal = TiergateError(f"internal error in the gateway (request id {call.request_id})")
        return error_response(edge, internal, call.request_id, call.record_error(internal))
    cost = call.record(outcome, response.usage, "ok")
    payload = json.dumps(edge.render(response, call.request_id), separators=(",", ":")).encode()
    return Response(payload, media_type="application/json", headers=route_headers(outcome, call.request_id, cost))


def _stream(call: Call, chat: ChatRequest, events: EventStream, outcome: Outcome) -> Response:
    prompt_tokens = estimate_prompt_tokens(chat)  # a header-time estimate; the ledger has the truth
    renderer = call.edge.renderer(call.request_id, outcome.backend.backend.model, chat, prompt_tokens)
    estimate = call.state.costs.cost(outcome.backend.config, Usage(input_tokens=prompt_tokens, estimated=True))
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
