"""Account: when a request ends, one ledger row, its metrics and its budget settled, on every path.

Every ending (an answer, a stream cut short, a policy refusal, an error) goes through :func:`ledger_row`, the
one place a row is built, and :meth:`Account._close`, the one place it is counted, settled and written, with
the request's tries (:func:`attempt_rows`: the ledger's ``attempts``; a line in the log when the path was more
than one clean answer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tiergate.accounting.budgets import Reservation
from tiergate.accounting.cost import Cost, CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.metrics import Metrics
from tiergate.accounting.schema import AttemptRow, LedgerRow, Status, status_of
from tiergate.dispatch.pool import Pool
from tiergate.dispatch.trace import Trace
from tiergate.errors import RateLimited, TiergateError
from tiergate.limits import Settler
from tiergate.pipeline.gateway import Outcome, Plan
from tiergate.tokens import estimate_prompt_tokens, estimate_tokens
from tiergate.tracing import (
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    AttemptSpan,
    RequestTrace,
)
from tiergate.types import ChatRequest, Dialect, StreamEvent, TextDelta, ToolArgsDelta, Usage

__all__ = ["COUNT_TIMEOUT_S", "Account", "Books", "Produced", "attempt_rows", "ledger_row"]

log = logging.getLogger("tiergate.requests")
#: How long the accounting of a cut stream may wait for the backend's own prompt count.
COUNT_TIMEOUT_S = 5.0


class Books(Protocol):
    """Where the account step writes (the app's state holds them all)."""

    @property
    def pool(self) -> Pool: ...
    @property
    def costs(self) -> CostModel: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def budgets(self) -> Settler: ...
    @property
    def metrics(self) -> Metrics: ...
    def spawn(self, work: Coroutine[Any, Any, None]) -> None: ...


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


def ledger_row(
    account: Account,
    *,
    tier: str | None,
    backend: str | None,
    route: str,
    status: Status,
    elapsed: float,
    http_status: int = 200,
    usage: Usage | None = None,
    cost: Cost | None = None,
    ttft: float | None = None,
    failovers: int = 0,
    batch: str | None = None,
) -> LedgerRow:
    """The one ledger row of a request that ends now (``usage`` and ``cost`` absent: nothing was served).

    ``batch``: the ``tiergate batch`` run the request belongs to (``None``: live traffic)."""
    usage = usage or Usage()
    return LedgerRow(
        request_id=account.request_id,
        key_name=account.caller,
        dialect=account.dialect.value,
        model=account.model,
        tier=tier,
        backend=backend,
        route=route,
        status=status,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_usd=0.0 if cost is None else cost.usd,
        counterfactual_usd=0.0 if cost is None else cost.counterfactual_usd,
        latency_ms=elapsed * 1000,
        ttft_ms=None if ttft is None else ttft * 1000,
        http_status=http_status,
        failovers=failovers,
        estimated=usage.estimated,
        marginal_usd=0.0 if cost is None else cost.marginal_usd,
        utilisation=None if cost is None else cost.utilisation,
        batch=batch,
    )


#: Longest reason kept in the ledger (the column's width).
REASON_CHARS = 1000


def attempt_rows(request_id: str, trace: Trace, costs: CostModel, pool: Pool) -> tuple[list[AttemptRow], float]:
    """The ledger rows of a request's tries, and what they cost beyond the request's own row (hedges that lost,
    charged for their prompt and any tokens they produced). Tries still open end as ``cancelled``."""
    trace.settle("cancelled", "the request ended first")
    now_wall, now = datetime.now(UTC), time.monotonic()
    rows: list[AttemptRow] = []
    extra = 0.0
    for seq, t in enumerate(trace.tries):
        cost = 0.0
        state = pool.get(t.backend)
        if t.outcome == "lost" and state is not None:
            usage = Usage(input_tokens=t.input_tokens, output_tokens=t.output_tokens, estimated=True)
            cost = costs.charge(state.config, usage).usd
            extra += cost
        ended = t.ended if t.ended is not None else now
        rows.append(
            AttemptRow(
                request_id=request_id,
                seq=seq,
                backend=t.backend,
                tier=t.tier,
                purpose=t.purpose,
                outcome=t.outcome,
                reason=t.reason[:REASON_CHARS],
                upstream_status=t.upstream_status,
                started_ms=(t.started - trace.origin) * 1000,
                latency_ms=(ended - t.started) * 1000,
                input_tokens=t.input_tokens,
                output_tokens=t.output_tokens,
                cost_usd=cost,
                ts=now_wall - timedelta(seconds=now - t.started),
            )
        )
    return rows, extra


@dataclass(slots=True)
class Account:
    """One request in flight: what accounting needs when it ends. The edge fills ``caller`` and ``model`` as
    it learns them, the pipeline ``plan`` (errors are attributed to it) and ``reservation``."""

    books: Books
    dialect: Dialect
    request_id: str
    started: float
    caller: str = ""
    model: str = ""
    reservation: Reservation | None = None
    plan: Plan | None = None
    #: The request's OpenTelemetry spans (:mod:`tiergate.tracing`); ended here, with the ledger row.
    spans: RequestTrace | None = None

    def record(
        self, outcome: Outcome, usage: Usage, status: str, ttft: float | None = None, elapsed: float | None = None
    ) -> float:
        """A request a backend served (``status``: ok, cancelled or error); returns its cost in USD."""
        cfg = outcome.backend.config
        cost = self.books.costs.charge(cfg, usage, outcome.model)  # open backends: amortised at measured utilisation
        elapsed = time.perf_counter() - self.started if elapsed is None else elapsed
        tier, name, m = cfg.tier.value, cfg.name, self.books.metrics
        m.tokens.labels(tier, name, "input", status).inc(usage.input_tokens)
        m.tokens.labels(tier, name, "output", status).inc(usage.output_tokens)
        m.cost.labels(tier, name).inc(cost.usd)
        if ttft is not None:
            m.ttft.labels(tier, name).observe(ttft)
        if outcome.failovers:
            m.failovers.labels(tier).inc()
        row = ledger_row(
            self,
            tier=tier,
            backend=name,
            route=outcome.route,
            status=status_of(status),
            elapsed=elapsed,
            usage=usage,
            cost=cost,
            ttft=ttft,
            failovers=len(outcome.failovers),
        )
        self._close(row, status, elapsed, cost.usd, usage.input_tokens + usage.output_tokens)
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
                sent = plan.outbound(outcome.backend, chat)[0] if plan is not None and plan.outbound else chat
                async with asyncio.timeout(COUNT_TIMEOUT_S):
                    prompt = int(await backend.count_tokens(sent))
            except Exception as exc:  # accounting must not be lost: fall back to the estimate
                log.info("request %s: no prompt count from %s (%s)", self.request_id, outcome.backend.name, exc)
            usage = Usage(input_tokens=prompt, output_tokens=output, estimated=True)
            self.record(outcome, usage, status, ttft, elapsed)

        self.books.spawn(settle())

    def record_refusal(self, plan: Plan) -> None:
        """A request the hard policy refused (HTTP 200 with a refusal): counted and in the ledger."""
        elapsed = time.perf_counter() - self.started
        row = ledger_row(self, tier=plan.tier.value, backend=None, route=plan.route, status="refused", elapsed=elapsed)
        self._close(row, "refused", elapsed)

    def record_error(self, exc: TiergateError) -> LedgerRow:
        """Count and record an error answer; returns its row (the error's ``x-tiergate-*`` headers read it)."""
        tier, backend = self.where(exc)
        elapsed = time.perf_counter() - self.started
        row = ledger_row(
            self,
            tier=tier,
            backend=backend,
            route=self.plan.route if self.plan is not None else "",
            status="refused" if isinstance(exc, RateLimited) else "error",
            elapsed=elapsed,
            http_status=exc.status,
        )
        self._close(row, str(exc.status), elapsed)
        return row

    def where(self, exc: TiergateError) -> tuple[str | None, str | None]:
        """The (tier, backend) an error happened on, where known: the backend that failed, else the plan's tier."""
        backend = getattr(exc, "backend", "") or None
        state = self.books.pool.get(backend) if backend else None
        if state is not None:
            return state.config.tier.value, backend
        return (self.plan.tier.value if self.plan is not None else None), backend

    def _close(self, row: LedgerRow, status: str, elapsed: float, usd: float = 0.0, tokens: int = 0) -> None:
        """Count the request under ``status`` (the metrics' label), settle its reservation, write its row and its
        tries (what a losing hedge cost is settled and counted too)."""
        labels = (row.dialect, row.tier or "none", row.backend or "none", status)
        if self.spans is None:
            self._book(row, labels, elapsed, usd, tokens)
            return
        with self.spans.stage("account", {"tiergate.cost_usd": row.cost_usd}):
            self._book(row, labels, elapsed, usd, tokens)
        if self.plan is not None:
            self._attempt_spans(self.spans, self.plan.trace)
        self.spans.end(
            status=row.status,
            http_status=row.http_status,
            error=None if row.status != "error" else str(row.http_status),
            attributes={
                "tiergate.tier": row.tier,
                "tiergate.backend": row.backend,
                "tiergate.route": row.route,
                "tiergate.cost_usd": row.cost_usd,
                "tiergate.failovers": row.failovers,
                INPUT_TOKENS: row.input_tokens,
                OUTPUT_TOKENS: row.output_tokens,
                CACHE_READ_TOKENS: row.cache_read_tokens or None,
                CACHE_WRITE_TOKENS: row.cache_write_tokens or None,
            },
        )

    def _attempt_spans(self, spans: RequestTrace, trace: Trace) -> None:
        """One CLIENT span per try of the request (its own start and end, monotonic times mapped to the wall)."""
        if not spans.recording:
            return
        wall = time.time_ns() - time.monotonic_ns()
        for number, t in enumerate(trace.tries, 1):
            state = self.books.pool.get(t.backend)
            ended = t.ended if t.ended is not None else time.monotonic()
            spans.attempt(
                AttemptSpan(
                    backend=t.backend,
                    kind=state.config.kind if state is not None else "",
                    model=state.backend.model if state is not None else t.backend,
                    tier=t.tier,
                    start_ns=wall + int(t.started * 1e9),
                    end_ns=wall + int(ended * 1e9),
                    outcome=t.outcome,
                    purpose=t.purpose,
                    number=number,
                    error=None if t.clean else t.outcome,
                    reason=t.reason or None,
                    status=t.upstream_status,
                    input_tokens=t.input_tokens,
                    output_tokens=t.output_tokens,
                )
            )

    def _book(self, row: LedgerRow, labels: tuple[str, str, str, str], elapsed: float, usd: float, tokens: int) -> None:
        self.books.metrics.requests.labels(*labels).inc()
        self.books.metrics.latency.labels(*labels).observe(elapsed)
        tries: list[AttemptRow] = []
        extra = 0.0
        if self.plan is not None:
            trace = self.plan.trace
            tries, extra = attempt_rows(self.request_id, trace, self.books.costs, self.books.pool)
            for t in tries:
                if t.cost_usd:
                    self.books.metrics.cost.labels(t.tier, t.backend).inc(t.cost_usd)
            status = labels[3]
            level = logging.INFO if status in ("ok", "cancelled", "refused") else logging.WARNING
            if trace.eventful and log.isEnabledFor(level):
                log.log(level, "request %s (%s): %s", self.request_id, status, trace.path())
        self.books.budgets.settle(self.reservation, usd + extra, tokens)
        self.books.ledger.record(row, tries)
