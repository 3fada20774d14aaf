"""Dispatch: try a plan's targets in order, with retries, timeouts, breakers and failover; streams included.

Rules (decided by the pure functions in :mod:`tiergate.dispatch.retry`):

- after a retryable failure before any byte reached the client, go at once (no backoff) to a later target of
  the same tier that is ready (healthy, circuit closed, a free slot or room in its queue, not failed already),
  as load balancers do; only the last ready replica of its tier is retried itself, with backoff (full jitter,
  or the server's Retry-After up to a cap), within the request's total deadline;
- never retry a client error (it would fail the same way); after a context-length error, go only to a
  backend with a strictly larger known context window;
- skip a backend whose circuit is open; a saturated backend is overflow, not a failure;
- a non-streaming request is asked as a stream and gathered (:mod:`tiergate.dispatch.gather`) where the
  backend declares it, so its first-token budget and stall timeout apply as to a stream; a whole answer asked
  whole (Claude given the caller's own body) has the whole-answer budget (:func:`answer_budget`);
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
from typing import Generic, TypeAlias, TypeVar, cast

from tiergate.backends.base import takes_native
from tiergate.config import DispatchConfig
from tiergate.dispatch.gather import assemble, gather
from tiergate.dispatch.pool import BackendState, Lease, Pool
from tiergate.dispatch.resume import supervise
from tiergate.dispatch.retry import (
    RetryPolicy,
    answer_budget,
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
    NativeEvent,
    StreamEvent,
    TextDelta,
    ToolArgsDelta,
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
        hedge: Hedge[T] | None = None,
    ) -> tuple[T, Lease, Try]:
        """Run ``call`` on the targets in order; the winner's lease (closed unless ``hold``: streams keep it) and
        its try. Each backend asked or passed over is recorded in ``attempts.trace``; ``purpose`` names the first
        try on each backend (else ``first`` / ``failover``; a try again on the same backend is a ``retry``).
        With ``hedge``, a first try that has not answered after the hedge's delay is raced against the next ready
        target (:meth:`_race`)."""
        trace = attempts.trace
        raced: set[str] = set()  # partners that failed in a race: not asked again
        for i, state in enumerate(targets):
            tier = state.config.tier.value
            if state.name in raced:
                continue
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
                later = targets[i + 1 :]
                partner = partner_for(state, later, attempts, raced) if hedge is not None and attempt == 1 else None
                try:
                    if hedge is not None and partner is not None:
                        got = await self._race(state, tried, partner, call, later, attempts, deadline, hedge, raced)
                    else:
                        got = await self._attempt_on(state, tried, call, attempt, later, attempts, deadline)
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
                if isinstance(got, tuple):
                    result, lease, won = got
                    if not hold:
                        won.close("ok")
                        lease.success()
                        lease.close()
                    return result, lease, won
                if got is None:
                    break
                if got > 0:  # a zero backoff goes again at once, without a turn of the loop
                    await asyncio.sleep(got)
        raise attempts.last or NoBackendAvailable("no backend is available for this request")

    async def _attempt_on(
        self,
        state: BackendState,
        tried: Try,
        call: Callable[[BackendState, float], Awaitable[T]],
        attempt: int,
        later: list[BackendState],
        attempts: Attempts,
        deadline: float,
    ) -> tuple[T, Lease, Try] | float | None:
        """One try on ``state`` under a lease: the answer with its lease kept (the caller closes it), or, judged by
        :meth:`_failed`, the pause before trying ``state`` again (``None``: go to the next target). A full backend
        raises :class:`Saturated`; a queue wait to the deadline :class:`UpstreamTimeout`."""
        async with self.pool.lease(state, max_wait_s=deadline - time.monotonic()) as lease:
            try:
                result = await _attempt(call, state, deadline)
            except UpstreamError as exc:
                tried.fail(exc)
                return self._failed(lease, exc, attempt, later, attempts, deadline)
            return result, lease.keep(), tried

    async def _race(
        self,
        state: BackendState,
        tried: Try,
        partner: BackendState,
        call: Callable[[BackendState, float], Awaitable[T]],
        later: list[BackendState],
        attempts: Attempts,
        deadline: float,
        hedge: Hedge[T],
        raced: set[str],
    ) -> tuple[T, Lease, Try] | float | None:
        """Hedging: a first try on ``state``; if it has not answered after ``hedge.delay(state)``, a try on
        ``partner`` too, and whichever answers first is taken; the other is cancelled (its try ``lost``, what it
        cost accounted). A side that fails leaves the race to the other; when both fail, the outcome is
        ``state``'s (the partner, failed or not, is not asked again in this request)."""
        first = asyncio.create_task(self._attempt_on(state, tried, call, 1, later, attempts, deadline))
        tries: dict[asyncio.Task[tuple[T, Lease, Try] | float | None], Try] = {first: tried}
        winner: asyncio.Task[tuple[T, Lease, Try] | float | None] | None = None
        try:
            await asyncio.wait({first}, timeout=hedge.delay(state))
            if first.done() or not partner.ready or partner.name in attempts.failed:
                winner = first  # no race: whatever it gives is the outcome
                return await first
            hedged = attempts.trace.begin(partner.name, partner.config.tier.value, "hedge")
            hedged.input_tokens = tried.input_tokens
            log.info("hedging: no answer from %s yet, racing %s against it", state.name, partner.name)
            rest = [s for s in later if s is not partner]
            second = asyncio.create_task(self._attempt_on(partner, hedged, call, 1, rest, attempts, deadline))
            tries[second] = hedged
            raced.add(partner.name)
            outcome: float | None = None
            error: BaseException | None = None
            pending: set[asyncio.Task[tuple[T, Lease, Try] | float | None]] = {first, second}
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: t is not first):
                    failure = task.exception()
                    if isinstance(failure, Saturated | UpstreamTimeout):  # no slot in time: that side failed
                        tries[task].fail(failure)
                        attempts.last = failure
                    elif failure is not None:  # a client error: it would fail the same everywhere
                        error = error or failure
                    elif isinstance(task.result(), tuple):
                        winner = winner or task
                    elif task is first:
                        outcome = cast("float | None", task.result())
            if winner is not None:
                got = winner.result()
                assert isinstance(got, tuple)
                return got
            if error is not None:
                raise error
            return outcome
        finally:
            await self._settle_race(tries, winner, hedge)

    async def _settle_race(
        self,
        tries: dict[asyncio.Task[tuple[T, Lease, Try] | float | None], Try],
        winner: asyncio.Task[tuple[T, Lease, Try] | float | None] | None,
        hedge: Hedge[T],
    ) -> None:
        """Cancel the side still running, close an answer that came second (no verdict for either: slower is no
        fault), and mark their tries ``lost`` (``cancelled`` when the race itself was abandoned)."""
        others = [task for task in tries if task is not winner]
        for task in others:
            task.cancel()  # no effect on a task already done
        results = await asyncio.gather(*others, return_exceptions=True)
        for task, got in zip(others, results, strict=True):
            t = tries[task]
            if isinstance(got, tuple):  # answered too, just after the winner
                result, lease, _ = got
                try:
                    t.output_tokens = await hedge.discard(result)
                finally:
                    lease.close()
            if winner is not None:
                t.close("lost", f"{tries[winner].backend} answered first")
            else:
                t.close("cancelled", "the request ended first")

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
        try, ``purpose`` names the first one (``escalate``).

        A backend that streams whole answers (``capabilities.complete_by_stream``) is asked for a stream, under its
        first-token budget and stall timeout, gathered into the answer (:meth:`_gathered`); the caller's own body
        (Claude passthrough) is asked whole, within the whole-answer budget. One attempt has ``timeout_s`` either
        way. A backend silent for longer is left, and not asked again within the request (:class:`Silent`)."""
        attempts = Attempts(trace=trace or Trace())
        deadline = time.monotonic() + self.config.deadline_s

        async def call(state: BackendState, deadline: float) -> ChatResponse:
            sent, restorer = outbound(state, request) if outbound else (request, None)
            caps = state.backend.capabilities
            if caps.complete_by_stream and not takes_native(caps, sent):
                return await self._gathered(state, sent, restorer, deadline)
            limit = min(state.config.timeout_s, deadline - time.monotonic())
            budget = answer_budget(state.config, estimate_prompt_tokens(sent), sent.max_tokens)
            limit = limit if budget is None else min(limit, budget)
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

    async def _gathered(
        self, state: BackendState, sent: ChatRequest, restorer: Restorer | None, deadline: float
    ) -> ChatResponse:
        """``sent`` asked of ``state`` as a stream and gathered into the whole answer: the first token within the
        backend's first-token budget, no silence longer than its stall timeout, all of it within ``timeout_s``."""
        limit = min(state.config.timeout_s, deadline - time.monotonic())
        events = state.backend.stream(sent)
        if restorer is not None:  # placeholders in the answer become the caller's values again
            events = restorer.restore_events(events)
        input_tokens = estimate_prompt_tokens(sent)
        try:
            async with asyncio.timeout(limit):
                first, events = await opened(events, min(first_token_budget(state.config, input_tokens), limit), state)
                got, end = await gather(first, events, state.config.stall_timeout_s, deadline, state.name)
        except TimeoutError:
            raise Silent(f"no answer within {limit:.1f}s", backend=state.name) from None
        return assemble(got, end, state.backend.model, input_tokens)

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
        input_tokens = estimate_prompt_tokens(request)

        async def call(state: BackendState, deadline: float) -> tuple[StreamEvent, EventStream]:
            sent, restorer = outbound(state, request) if outbound else (request, None)
            events = state.backend.stream(sent)
            if restorer is not None:  # placeholders in the answer become the caller's values again
                events = restorer.restore_events(events)
            budget = first_token_budget(state.config, estimate_prompt_tokens(sent))
            return await opened(events, min(budget, deadline - time.monotonic()), state)

        hedge: Hedge[tuple[StreamEvent, EventStream]] | None = None
        if self.config.hedge_after is not None:
            fraction = self.config.hedge_after
            hedge = Hedge(lambda s: fraction * first_token_budget(s.config, input_tokens), _discard_stream)
        (first, events), lease, tried = await self._run(
            targets, attempts, deadline, call, True, input_tokens, purpose, hedge
        )
        served = Served(lease.state, attempts, tried)
        events = supervise(self, request, targets, served, first, events, lease, deadline, outbound)
        return first, events, served


@dataclass(frozen=True, slots=True)
class Hedge(Generic[T]):
    """How a dispatch is hedged: ``delay(state)``, the seconds without an answer before a partner is started
    (``dispatch.hedge_after`` x the first-token budget), and ``discard(result)``, which closes an answer that came
    second and says how many tokens it had produced."""

    delay: Callable[[BackendState], float]
    discard: Callable[[T], Awaitable[int]]


async def _discard_stream(opened: tuple[StreamEvent, EventStream]) -> int:
    first, events = opened
    await events.aclose()
    return 1 if isinstance(first, TextDelta | ToolArgsDelta) else 0


def partner_for(
    state: BackendState, later: list[BackendState], attempts: Attempts, raced: set[str]
) -> BackendState | None:
    """The backend a hedge races against ``state``: the first of the ``later`` targets that is ready now (healthy,
    circuit closed, not resting, room for the request), neither failed nor raced already in this request, and
    large enough after a context-length error."""
    return next(
        (
            s
            for s in later
            if s is not state
            and s.name not in attempts.failed
            and s.name not in raced
            and (not attempts.context_failed or fits_context(attempts.context_window, s.config.context_window))
            and s.ready
        ),
        None,
    )


async def _attempt(call: Callable[[BackendState, float], Awaitable[T]], state: BackendState, deadline: float) -> T:
    """``call`` on ``state``; a backend bug must still be an upstream error, never a 500."""
    try:
        return await call(state, deadline)
    except (UpstreamError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("backend %s raised an unexpected error", state.name)
        raise UpstreamError("failed inside the gateway's client for it (the gateway's log has the details)",
                            backend=state.name) from exc  # fmt: skip


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


async def opened(events: EventStream, limit: float, state: BackendState) -> tuple[StreamEvent, EventStream]:
    """Wait up to ``limit`` seconds for the stream's first token (:func:`is_token`): its first event and the whole
    stream (framing that came before the first token included), or :class:`Silent`. The stream is closed unless it
    is handed back."""
    framing: list[StreamEvent] = []  # Claude's message_start, block starts, pings: not a token yet
    try:
        async with asyncio.timeout(limit):
            first = await anext(events)
            while not is_token(first):
                framing.append(first)
                first = await anext(events)
    except TimeoutError:
        await events.aclose()
        raise Silent(f"no first token within {limit:.1f}s", backend=state.name) from None
    except StopAsyncIteration:
        raise UpstreamError("stream ended before any event", backend=state.name) from None
    except BaseException:
        await events.aclose()
        raise
    if framing:
        return framing[0], _replay([*framing[1:], first], events)
    return first, events


def is_token(ev: StreamEvent) -> bool:
    """Does ``ev`` carry the answer (text, a tool call, thinking, the end), as opposed to a stream's framing?"""
    if isinstance(ev, NativeEvent):
        return ev.data.get("type") == "content_block_delta" if isinstance(ev.data, dict) else False
    return True


async def _replay(head: list[StreamEvent], rest: EventStream) -> EventStream:
    """``head``, then the rest of the stream (closing it when the consumer stops)."""
    try:
        for ev in head:
            yield ev
        async for ev in rest:
            yield ev
    finally:
        await rest.aclose()
