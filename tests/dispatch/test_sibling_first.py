"""The dispatcher's retry order, without I/O: after a retryable failure a ready replica of the same tier is
tried at once (no backoff drawn); the failed backend is retried on itself, after a backoff, only when it is the
last ready replica of its tier; then the next tier, if the plan lists it.

Backoffs are counted by replacing :meth:`RetryPolicy.backoff` (which then answers 0: nothing sleeps), attempts by
counting calls at the stub backends; no test looks at a clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.pools import pool_of
from tiergate.backends.mock import MockBackend
from tiergate.config import DispatchConfig
from tiergate.dispatch.dispatcher import Attempts, Dispatcher, ready_sibling
from tiergate.dispatch.pool import BackendState, Pool
from tiergate.dispatch.retry import RetryPolicy
from tiergate.errors import Silent, UpstreamError, UpstreamUnavailable
from tiergate.types import (
    ChatRequest,
    ChatResponse,
    Message,
    StopReason,
    StreamEnd,
    TextDelta,
    TextPart,
    Tier,
    Usage,
)


class Flaky:
    """A handler that fails with the errors queued in ``script``, one per call (a stream before its first event),
    then answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.script: list[UpstreamError] = []
        self.calls = 0

    def fail(self, *statuses: int, retry_after: float | None = None) -> None:
        self.script += [
            UpstreamUnavailable(f"HTTP {s}", backend=self.name, upstream_status=s, retry_after=retry_after)
            for s in statuses
        ]

    def __call__(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        return ChatResponse("r", self.name, [TextPart("ok")], StopReason.END_TURN, Usage())


def make_pool(*backends: dict[str, Any]) -> Pool:
    return pool_of(lambda config: MockBackend(config, Flaky(config.name)), *backends)


def flaky(state: BackendState) -> Flaky:
    assert isinstance(state.backend, MockBackend)
    assert isinstance(state.backend.handler, Flaky)
    return state.backend.handler


def calls(*states: BackendState) -> list[int]:
    return [flaky(s).calls for s in states]


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float | None]]:
    """``(attempt, retry_after)`` of every backoff the dispatcher asked for; each answers 0 (no sleep)."""
    asked: list[tuple[int, float | None]] = []

    def backoff(self: RetryPolicy, attempt: int, retry_after: float | None, rng: object) -> float:
        asked.append((attempt, retry_after))
        return 0.0

    monkeypatch.setattr(RetryPolicy, "backoff", backoff)
    return asked


def _request() -> ChatRequest:
    return ChatRequest(model="open", messages=[Message.text("user", "hi")])


def _three() -> tuple[Pool, BackendState, BackendState, BackendState]:
    """Open replicas ``a`` and ``b``, closed ``c``: the plan [a, b, c] of an open request with failover."""
    pool = make_pool({"name": "a"}, {"name": "b"}, {"name": "c", "tier": "closed"})
    return pool, pool.states["a"], pool.states["b"], pool.states["c"]


def _open(state: BackendState) -> None:
    for _ in range(state.breaker.failures):
        state.breaker.record_failure(0.0)
    state.breaker.opened_at = float("inf")  # still cooling down whatever the clock says


async def test_a_ready_sibling_is_tried_at_once_without_a_backoff(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(a).fail(503)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [a, b, c])
    assert served.state is b
    assert calls(a, b, c) == [1, 1, 0]
    assert backoffs == []
    assert served.attempts.failed == ["a"]
    assert a.in_flight == b.in_flight == 0


async def test_a_stream_failing_before_its_first_event_goes_to_the_sibling_at_once(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(a).fail(503)
    first, events, served = await Dispatcher(pool, DispatchConfig()).stream(_request(), [a, b, c])
    rest = [ev async for ev in events]
    assert served.state is b
    assert isinstance(first, TextDelta)
    assert isinstance(rest[-1], StreamEnd)
    assert calls(a, b, c) == [1, 1, 0]
    assert backoffs == []
    assert a.in_flight == b.in_flight == 0


@pytest.mark.parametrize("why", ["open circuit", "half-open circuit", "saturated", "unhealthy"])
async def test_a_sibling_that_cannot_take_it_now_means_a_backoff_retry_on_the_same_backend(
    backoffs: list[Any], why: str
) -> None:
    pool = make_pool(
        {"name": "a"}, {"name": "b", "max_concurrency": 1, "max_queue": 0}, {"name": "c", "tier": "closed"}
    )
    a, b, c = (pool.states[n] for n in "abc")
    if why == "open circuit":
        _open(b)
    elif why == "half-open circuit":  # its one probe is not spent on a detour
        _open(b)
        b.breaker.state = "half-open"
    elif why == "saturated":
        await pool.acquire(b)  # its only slot is taken and it has no queue
    else:
        b.healthy = False
    flaky(a).fail(503)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [a, b, c])
    assert served.state is a
    assert calls(a, b, c) == [2, 0, 0]
    assert backoffs == [(1, None)]
    assert served.attempts.failed == []


async def test_a_sibling_with_room_in_its_queue_is_ready() -> None:
    pool = make_pool({"name": "a"}, {"name": "b", "max_concurrency": 1, "max_queue": 1})
    b = pool.states["b"]
    assert b.ready
    await pool.acquire(b)
    assert b.ready  # the slot is taken, but it may still queue
    waiter = asyncio.create_task(pool.acquire(b))
    await asyncio.sleep(0)
    assert not b.ready  # slot and queue full: saturated
    pool.release(b)
    await waiter
    pool.release(b)
    assert b.ready


async def test_the_last_replica_of_its_tier_is_retried_then_the_next_tier(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(a).fail(503)
    flaky(b).fail(503, 502)
    _, served = await Dispatcher(pool, DispatchConfig(attempts=2)).complete(_request(), [a, b, c])
    assert served.state is c
    assert calls(a, b, c) == [1, 2, 1]  # a once (b was ready), b twice (the last of its tier), then c
    assert backoffs == [(1, None)]  # one backoff: b's retry on itself
    assert served.attempts.failed == ["a", "b"]


async def test_both_replicas_failing_once_is_answered_by_the_second_after_one_backoff(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(a).fail(503)
    flaky(b).fail(503)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [a, b, c])
    assert served.state is b
    assert calls(a, b, c) == [1, 2, 0]
    assert backoffs == [(1, None)]


async def test_without_the_next_tier_in_the_plan_the_tier_fails_cleanly(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()  # the plan of open_to_closed: false lists the open tier only
    flaky(a).fail(503, 503)
    flaky(b).fail(503, 503)
    with pytest.raises(UpstreamUnavailable):
        await Dispatcher(pool, DispatchConfig(attempts=2)).complete(_request(), [a, b])
    assert calls(a, b, c) == [1, 2, 0]
    assert backoffs == [(1, None)]


async def test_a_single_replica_is_retried_on_itself_with_its_retry_after(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(a).fail(429, retry_after=0.3)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [a])  # a pinned plan
    assert served.state is a
    assert calls(a, b, c) == [2, 0, 0]
    assert backoffs == [(1, 0.3)]


async def test_a_replica_the_plan_left_out_is_never_a_sibling(backoffs: list[Any]) -> None:
    """Hard policy (sovereignty, guard) filters the plan's targets; a ready replica outside them is not tried."""
    pool, a, b, c = _three()
    flaky(a).fail(503)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [a, c])
    assert served.state is a
    assert calls(a, b, c) == [2, 0, 0]
    assert backoffs == [(1, None)]


async def test_another_tier_is_not_a_sibling(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(c).fail(529)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [c, a, b])  # a closed plan
    assert served.state is c
    assert calls(a, b, c) == [0, 0, 2]
    assert backoffs == [(1, None)]


async def test_the_old_order_when_retry_other_replica_first_is_off(backoffs: list[Any]) -> None:
    pool, a, b, c = _three()
    flaky(a).fail(503)
    config = DispatchConfig(retry_other_replica_first=False)
    _, served = await Dispatcher(pool, config).complete(_request(), [a, b, c])
    assert served.state is a
    assert calls(a, b, c) == [2, 0, 0]
    assert backoffs == [(1, None)]


def test_ready_sibling_skips_failed_other_tier_and_too_small_backends() -> None:
    pool = make_pool(
        {"name": "a", "context_window": 4096},
        {"name": "same", "context_window": 4096},
        {"name": "larger", "context_window": 8192},
        {"name": "c", "tier": "closed", "context_window": 200_000},
    )
    a, same, larger, c = (pool.states[n] for n in ("a", "same", "larger", "c"))
    assert ready_sibling(a, [same, larger, c], Attempts())
    assert not ready_sibling(a, [c], Attempts())
    assert not ready_sibling(a, [same, larger], Attempts(failed=["same", "larger"]))
    after_context = Attempts(context_window=4096, context_failed=True)
    assert not ready_sibling(a, [same, c], after_context)
    assert ready_sibling(a, [same, larger], after_context)


async def test_a_retry_after_puts_the_replica_last_for_the_next_requests(backoffs: list[Any]) -> None:
    """A 429 with ``Retry-After`` sends this request to the sibling at once, and the requests after it too, until
    the pause is over: they do not each pay a refused exchange with the replica that asked for it."""
    pool, a, b, _ = _three()
    flaky(a).fail(429, retry_after=30.0)
    dispatcher = Dispatcher(pool, DispatchConfig(retry_after_cap_s=5.0))
    _, first = await dispatcher.complete(_request(), pool.tier(Tier.OPEN))
    assert first.state is b
    assert a.resting(time.monotonic())
    assert not a.ready
    assert a.resting_until - time.monotonic() <= 5.0  # capped as a backoff is
    assert [s.name for s in pool.tier(Tier.OPEN)] == ["b", "a"]
    for _ in range(3):
        _, served = await dispatcher.complete(_request(), pool.tier(Tier.OPEN))
        assert served.state is b
    assert calls(a, b) == [1, 4]
    assert backoffs == []


async def test_a_resting_replica_alone_is_still_asked_after_its_pause(backoffs: list[Any]) -> None:
    """Put last, not left out: with no sibling ready the resting replica is tried, after its Retry-After."""
    pool, a, b, _ = _three()
    _open(b)
    flaky(a).fail(429, retry_after=1.0)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [a, b])
    assert served.state is a
    assert calls(a, b) == [2, 0]
    assert backoffs == [(1, 1.0)]
    assert not a.resting(time.monotonic())  # its success ended the pause


def test_a_failure_without_retry_after_does_not_rest() -> None:
    pool, a, _, _ = _three()
    pool.failure(a, "HTTP 503")
    assert not a.resting(time.monotonic())
    assert a.ready
    pool.failure(a, "HTTP 429", rest_s=2.0)
    pool.failure(a, "HTTP 429", rest_s=0.5)  # a shorter pause does not cut a longer one short
    assert a.resting_until - time.monotonic() > 1.5


def _ranked() -> tuple[Pool, BackendState, BackendState, BackendState]:
    """``big`` (priority 10) over ``small`` (priority 0) in the open tier, and Claude: a plan [big, small, c]."""
    pool = make_pool({"name": "big", "priority": 10}, {"name": "small"}, {"name": "c", "tier": "closed"})
    big, small, c = (pool.states[n] for n in ("big", "small", "c"))
    return pool, big, small, c


async def test_a_higher_priority_backend_is_retried_on_itself_before_a_lower_one(backoffs: list[Any]) -> None:
    pool, big, small, c = _ranked()
    flaky(big).fail(500)
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [big, small, c])
    assert served.state is big
    assert calls(big, small, c) == [2, 0, 0]  # a lower-priority backend is no replica to hand the request to
    assert backoffs == [(1, None)]
    assert not ready_sibling(big, [small], Attempts())


async def test_a_silent_backend_is_never_retried_on_itself(backoffs: list[Any]) -> None:
    pool, big, small, c = _ranked()
    flaky(big).script.append(Silent("no first token within 1.0s", backend="big"))
    _, served = await Dispatcher(pool, DispatchConfig()).complete(_request(), [big, small, c])
    assert served.state is small
    assert calls(big, small, c) == [1, 1, 0]
    assert backoffs == []


def test_the_tier_order_puts_higher_priority_first_unless_it_is_unavailable() -> None:
    pool = make_pool({"name": "small"}, {"name": "big", "priority": 10})
    assert [s.name for s in pool.tier(Tier.OPEN)] == ["big", "small"]
    pool.states["big"].resting_until = time.monotonic() + 60  # it asked for a pause: the lesser one meanwhile
    assert [s.name for s in pool.tier(Tier.OPEN)] == ["small", "big"]
