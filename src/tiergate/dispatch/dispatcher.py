"""Dispatch: try a plan's targets in order, with retries, timeouts, breakers and failover; streams included.

Rules (decided by the pure functions in :mod:`tiergate.dispatch.retry`):

- after a retryable failure before any byte reached the client, go at once (no backoff) to a later target of
  the same tier that is ready (healthy, circuit closed, a free slot or room in its queue, not failed already),
  as load balancers do; only the last ready replica of its tier is retried itself, with backoff (full jitter,
  or the server's Retry-After up to a cap), within the request's total deadline;
- never retry a client error (it would fail the same way); after a context-length error, go only to a
  backend with a strictly larger known context window;
- skip a backend whose circuit is open; a saturated backend is overflow, not a failure;
- a stream that fails before its first event fails over transparently; one that fails after bytes were
  sent is *resumed* elsewhere (:mod:`tiergate.dispatch.resume`): continued where a backend continues a prefix,
  else restarted and spliced, checked against what the caller has either way; else it ends with an explicit
  error, never as if complete.

Every target a plan lists already passed hard policy (sovereignty, guard), so failover cannot bypass it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from tiergate.config import DispatchConfig
from tiergate.dispatch.pool import BackendState, Lease, Pool
from tiergate.dispatch.resume import supervise
from tiergate.dispatch.retry import (
    RetryPolicy,
    first_token_budget,
    fits_context,
    may_fail_over,
    rate_limited,
    retry_same,
)
from tiergate.dispatch.trace import Purpose, Trace, Try
from tiergate.errors import (
    ContextLengthExceeded,
    NoBackendAvailable,
    PrefillRejected,
    Saturated,
    Silent,
    UpstreamError,
    UpstreamTimeout,
)
from tiergate.signals.redact import Restorer
from tiergate.tokens import estimate_prompt_tokens
from tiergate.types import (
    ChatRequest,
    ChatResponse,
    EventStream,
    StreamEvent,
    Usage,
)

log = logging.getLogger("tiergate.dispatch")
T = TypeVar("T")
#: The hard policy's outbound step: the request as a backend may see it, and what restores the answer.
Outbound: TypeAlias = Callable[[BackendState, ChatRequest], tuple[ChatRequest, Restorer | None]]


@dataclass(slots=True)
class Attempts:
    """What happened on the way to an answer: failed backends (in order), the last error, and every try
    (``trace``: the request's, shared by every dispatch of it: a continuation, an escalation)."""

    failed: list[str] = field(default_factory=list)
    last: UpstreamError | None = None
    context_window: int | None = None
    context_failed: bool = False
    trace: Trace = field(default_factory=Trace)


@dataclass(slots=True)
class Served:
    """Where a request was answered: the backend, the attempts on the way, and the try that answered."""

    state: BackendState
    attempts: Attempts
    tried: Try | None = None


class Dispatcher:
    def __init__(self, pool: Pool, config: DispatchConfig) -> None:
        self.pool = pool
        self.config = config
        self.policy = RetryPolicy(
            config.attempts,
            config.backoff_base_s,
            config.backoff_cap_s,
            config.retry_after_cap_s,
            config.rate_limit_backoff_min_s,
            config.rate_limit_backoff_max_s,
        )
        self.rng = random.Random(config.seed)

    async def _run(
        self,
        targets: list[BackendState],
        attempts: Attempts,
        deadline: float,
        call: Callable[[BackendState, float], Awaitable[T]],
        hold: bool = False,
        input_tokens: int = 0,
        purpose: Purpose | None = None,
    ) -> tuple[T, Lease, Try]:
        """Run ``call`` on the targets in order; the winner's lease (closed unless ``hold``: streams keep it) and
        its try. Each backend asked or passed over is recorded in ``attempts.trace``; ``purpose`` names the first
        try on each backend (else ``first`` / ``failover``; a try again on the same backend is a ``retry``)."""
        trace = attempts.trace
        for i, state in enumerate(targets):
            tier = state.config.tier.value
            if attempts.context_failed and not fits_context(attempts.context_window, state.config.context_window):
                trace.passed_over(state.name, tier, "skipped", "its context window is not larger")
                continue
            for attempt in range(1, self.policy.attempts + 1):
                now = time.monotonic()
                if now >= deadline:
                    raise attempts.last or UpstreamTimeout("request deadline passed", backend=state.name)
                if not state.breaker.allow(now):
                    attempts.failed.append(state.name)
                    trace.passed_over(state.name, tier, "skipped", f"circuit {state.breaker.state}")
                    break
                tried = trace.begin(state.name, tier, purpose if attempt == 1 and purpose else trace.purpose(attempt))
                tried.input_tokens = input_tokens
                pause: float | None = None
                try:
                    async with self.pool.lease(state, max_wait_s=deadline - now) as lease:
                        try:
                            result = await _attempt(call, state, deadline)
                        except UpstreamError as exc:
                            tried.fail(exc)
                            pause = self._failed(lease, exc, attempt, targets[i + 1 :], attempts, deadline)
                        else:
                            if hold:
                                return result, lease.keep(), tried
                            tried.close("ok")
                            lease.success()
                            return result, lease, tried
                except Saturated as exc:  # no slot and a full queue: overflow by decision, the next target at once
                    tried.fail(exc)
                    attempts.failed.append(state.name)
                    attempts.last = exc
                    break
                except UpstreamTimeout as exc:  # queued until the deadline: nothing left to try
                    tried.fail(exc)
                    attempts.failed.append(state.name)
                    attempts.last = exc
                    raise
                if pause is None:
                    break
                if pause > 0:  # a zero backoff goes again at once, without a turn of the loop
                    await asyncio.sleep(pause)
        raise attempts.last or NoBackendAvailable("no backend is available for this request")

    def _failed(
        self,
        lease: Lease,
        exc: UpstreamError,
        attempt: int,
        later: list[BackendState],
        attempts: Attempts,
        deadline: float,
    ) -> float | None:
        """Judge a failed try: the pause before trying the same backend again, ``None`` to go to the next target;
        raises ``exc`` when no other backend could do better (a client error)."""
        state = lease.state
        attempts.last = exc
        if not may_fail_over(exc):
            raise exc
        if isinstance(exc, PrefillRejected):  # no verdict, not failed: it may still answer without the prefix
            state.learn_no_prefill(exc.message)
            return None
        if isinstance(exc, ContextLengthExceeded):  # no verdict: a rejection of the prompt is no fault of the backend
            attempts.context_failed = True
            attempts.context_window = state.config.context_window
        elif not isinstance(exc, Saturated):  # the backend's own queue full is overflow, not a fault
            lease.failure(exc.message, self.policy.rest(exc.retry_after, rate_limited(exc)))
            sibling = self.config.retry_other_replica_first and ready_sibling(state, later, attempts)
            if retry_same(exc, attempt, self.policy, bytes_sent=False, sibling_ready=sibling):
                pause = self.policy.pause(exc, attempt, self.rng)
                if time.monotonic() + pause < deadline:
                    return pause
        attempts.failed.append(state.name)
        return None

    async def complete(
        self,
        request: ChatRequest,
        targets: list[BackendState],
        outbound: Outbound | None = None,
        trace: Trace | None = None,
        purpose: Purpose | None = None,
    ) -> tuple[ChatResponse, Served]:
        """Answer ``request`` on the first target that can; ``trace`` (the request's, where it has one) records every
        try, ``purpose`` names the first one (``escalate``)."""
        attempts = Attempts(trace=trace or Trace())
        deadline = time.monotonic() + self.config.deadline_s

        async def call(state: BackendState, deadline: float) -> ChatResponse:
            limit = min(state.config.timeout_s, deadline - time.monotonic())
            sent, restorer = outbound(state, request) if outbound else (request, None)
            try:
                async with asyncio.timeout(limit):
                    response = await state.backend.complete(sent)
                    return restorer.restore_response(response) if restorer else response
            except TimeoutError:
                raise Silent(f"no answer within {limit:.1f}s", backend=state.name) from None

        response, lease, tried = await self._run(
            targets, attempts, deadline, call, input_tokens=estimate_prompt_tokens(request), purpose=purpose
        )
        tried.output_tokens = response.usage.output_tokens
        return response, Served(lease.state, attempts, tried)

    async def stream(
        self,
        request: ChatRequest,
        targets: list[BackendState],
        outbound: Outbound | None = None,
        deadline: float | None = None,
        attempts: Attempts | None = None,
        trace: Trace | None = None,
        purpose: Purpose | None = None,
    ) -> tuple[StreamEvent, EventStream, Served]:
        """Open a stream on the first target that yields a first event within its first-token budget.

        ``deadline`` (monotonic) is the request's, and ``attempts`` its record so far: a stream resumed after a
        break keeps both of the stream it resumes (``purpose``: ``continue`` or ``restart``). ``trace``: the
        request's record of tries, where it has one (``attempts.trace`` otherwise).
        """
        if attempts is None:
            attempts = Attempts(trace=trace or Trace())
        if deadline is None:
            deadline = time.monotonic() + self.config.deadline_s
        opened: dict[str, EventStream] = {}

        async def call(state: BackendState, deadline: float) -> StreamEvent:
            sent, restorer = outbound(state, request) if outbound else (request, None)
            events = state.backend.stream(sent)
            if restorer is not None:  # placeholders in the answer become the caller's values again
                events = restorer.restore_events(events)
            budget = first_token_budget(state.config, estimate_prompt_tokens(sent))
            limit = min(budget, deadline - time.monotonic())
            try:
                async with asyncio.timeout(limit):
                    first = await anext(events)
            except TimeoutError:
                await events.aclose()
                raise Silent(f"no first token within {limit:.1f}s", backend=state.name) from None
            except StopAsyncIteration:
                raise UpstreamError("stream ended before any event", backend=state.name) from None
            except BaseException:
                await events.aclose()
                raise
            opened[state.name] = events
            return first

        first, lease, tried = await self._run(
            targets, attempts, deadline, call, hold=True, input_tokens=estimate_prompt_tokens(request), purpose=purpose
        )
        served = Served(lease.state, attempts, tried)
        events = supervise(self, request, targets, served, first, opened[lease.state.name], lease, deadline, outbound)
        return first, events, served


async def _attempt(call: Callable[[BackendState, float], Awaitable[T]], state: BackendState, deadline: float) -> T:
    """``call`` on ``state``; a backend bug must still be an upstream error, never a 500."""
    try:
        return await call(state, deadline)
    except (UpstreamError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("backend %s raised an unexpected error", state.name)
        raise UpstreamError(f"unexpected {type(exc).__name__}: {exc}", backend=state.name) from exc


def ready_sibling(state: BackendState, later: list[BackendState], attempts: Attempts) -> bool:
    """Is one of the ``later`` targets a replica of ``state`` (same tier, same ``priority``) that can take the
    request at once? A lower-priority backend is no replica: the failed one is retried on itself first.

    Ready means :attr:`BackendState.ready` (healthy, circuit closed, a slot or queue place free), not failed
    already in this request, and large enough after a context-length error.
    """
    return any(
        s.config.tier is state.config.tier
        and s.config.priority == state.config.priority
        and s.name not in attempts.failed
        and (not attempts.context_failed or fits_context(attempts.context_window, s.config.context_window))
        and s.ready
        for s in later
    )


__all__ = ["Attempts", "Dispatcher", "Served", "Usage"]
