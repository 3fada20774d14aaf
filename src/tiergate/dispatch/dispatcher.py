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
from tiergate.dispatch.retry import RetryPolicy, fits_context, may_fail_over, retry_same
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
    """What happened on the way to an answer: failed backends (in order) and the last error."""

    failed: list[str] = field(default_factory=list)
    last: UpstreamError | None = None
    context_window: int | None = None
    context_failed: bool = False


@dataclass(slots=True)
class Served:
    state: BackendState
    attempts: Attempts


class Dispatcher:
    def __init__(self, pool: Pool, config: DispatchConfig) -> None:
        self.pool = pool
        self.config = config
        self.policy = RetryPolicy(
            config.attempts, config.backoff_base_s, config.backoff_cap_s, config.retry_after_cap_s
        )
        self.rng = random.Random(config.seed)

    async def _run(
        self,
        targets: list[BackendState],
        attempts: Attempts,
        deadline: float,
        call: Callable[[BackendState, float], Awaitable[T]],
        hold: bool = False,
    ) -> tuple[T, Lease]:
        """Run ``call`` on the targets in order; the winner's lease, closed unless ``hold`` (streams keep it)."""
        for i, state in enumerate(targets):
            if attempts.context_failed and not fits_context(attempts.context_window, state.config.context_window):
                continue
            for attempt in range(1, self.policy.attempts + 1):
                now = time.monotonic()
                if now >= deadline:
                    raise attempts.last or UpstreamTimeout("request deadline passed", backend=state.name)
                if not state.breaker.allow(now):
                    attempts.failed.append(state.name)
                    break
                pause: float | None = None
                try:
                    async with self.pool.lease(state, max_wait_s=deadline - now) as lease:
                        try:
                            result = await _attempt(call, state, deadline)
                        except UpstreamError as exc:
                            pause = self._failed(lease, exc, attempt, targets[i + 1 :], attempts, deadline)
                        else:
                            if hold:
                                return result, lease.keep()
                            lease.success()
                            return result, lease
                except Saturated as exc:  # no slot and a full queue: overflow by decision, the next target at once
                    attempts.failed.append(state.name)
                    attempts.last = exc
                    break
                except UpstreamTimeout as exc:  # queued until the deadline: nothing left to try
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
            lease.failure(exc.message, self.policy.rest(exc.retry_after))
            sibling = self.config.retry_other_replica_first and ready_sibling(state, later, attempts)
            if retry_same(exc, attempt, self.policy, bytes_sent=False, sibling_ready=sibling):
                pause = self.policy.backoff(attempt, exc.retry_after, self.rng)
                if time.monotonic() + pause < deadline:
                    return pause
        attempts.failed.append(state.name)
        return None

    async def complete(
        self, request: ChatRequest, targets: list[BackendState], outbound: Outbound | None = None
    ) -> tuple[ChatResponse, Served]:
        attempts = Attempts()
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

        response, lease = await self._run(targets, attempts, deadline, call)
        return response, Served(lease.state, attempts)

    async def stream(
        self,
        request: ChatRequest,
        targets: list[BackendState],
        outbound: Outbound | None = None,
        deadline: float | None = None,
        attempts: Attempts | None = None,
    ) -> tuple[StreamEvent, EventStream, Served]:
        """Open a stream on the first target that yields a first event within its first-token timeout.

        ``deadline`` (monotonic) is the request's, and ``attempts`` its record so far: a stream resumed after a
        break keeps both of the stream it resumes.
        """
        if attempts is None:
            attempts = Attempts()
        if deadline is None:
            deadline = time.monotonic() + self.config.deadline_s
        opened: dict[str, EventStream] = {}

        async def call(state: BackendState, deadline: float) -> StreamEvent:
            sent, restorer = outbound(state, request) if outbound else (request, None)
            events = state.backend.stream(sent)
            if restorer is not None:  # placeholders in the answer become the caller's values again
                events = restorer.restore_events(events)
            limit = min(state.config.first_token_timeout_s, deadline - time.monotonic())
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

        first, lease = await self._run(targets, attempts, deadline, call, hold=True)
        served = Served(lease.state, attempts)
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
