"""The pool without I/O: least-outstanding-requests order (weights included), concurrency slots and the
bounded wait queue (overflow is a ``Saturated`` decision), and the dispatcher overflowing on it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from tests.support.pools import pool_of
from tiergate.backends.mock import MockBackend
from tiergate.config import DispatchConfig
from tiergate.dispatch import Dispatcher
from tiergate.dispatch.pool import BackendState, Pool
from tiergate.errors import Saturated, UpstreamTimeout
from tiergate.types import ChatRequest, ChatResponse, Message, StopReason, TextPart, Tier, Usage


class Gated:
    """A handler that answers when its gate opens (``gate=None``: at once)."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()  # set once a call is in progress
        self.calls = 0

    async def __call__(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return ChatResponse(f"r{self.calls}", "stub", [TextPart("ok")], StopReason.END_TURN, Usage())


def make_pool(*backends: dict[str, Any]) -> Pool:
    return pool_of(lambda config: MockBackend(config, Gated()), *backends)


def stub(state: BackendState) -> Gated:
    assert isinstance(state.backend, MockBackend)
    assert isinstance(state.backend.handler, Gated)
    return state.backend.handler


def names(states: list[BackendState]) -> list[str]:
    return [s.name for s in states]


def test_least_outstanding_requests_first() -> None:
    pool = make_pool({"name": "a"}, {"name": "b"}, {"name": "c"})
    a, b, c = (pool.states[n] for n in "abc")
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert names(pool.tier(Tier.OPEN)) == ["b", "c", "a"]
    b.waiting = 2  # queued requests count as outstanding too
    assert names(pool.tier(Tier.OPEN)) == ["c", "a", "b"]


def test_outstanding_requests_are_divided_by_weight() -> None:
    pool = make_pool({"name": "big", "weight": 2.0}, {"name": "small", "weight": 1.0})
    big, small = pool.states["big"], pool.states["small"]
    big.in_flight, small.in_flight = 3, 2  # 1.5 per unit of weight against 2
    assert names(pool.tier(Tier.OPEN)) == ["big", "small"]
    big.in_flight = 5  # 2.5 against 2
    assert names(pool.tier(Tier.OPEN)) == ["small", "big"]


@pytest.mark.parametrize(("weights", "expected"), [((1.0, 1.0), (6, 6)), ((2.0, 1.0), (8, 4)), ((3.0, 1.0), (9, 3))])
async def test_requests_held_in_flight_spread_by_weight(
    weights: tuple[float, float], expected: tuple[int, int]
) -> None:
    pool = make_pool({"name": "a", "weight": weights[0]}, {"name": "b", "weight": weights[1]})
    picked: Counter[str] = Counter()
    for _ in range(12):  # each request stays in flight: the next one sees the load it added
        first = pool.tier(Tier.OPEN)[0]
        await pool.acquire(first)
        picked[first.name] += 1
    assert (picked["a"], picked["b"]) == expected


def test_open_circuits_and_unhealthy_backends_go_last() -> None:
    pool = make_pool({"name": "broken"}, {"name": "sick"}, {"name": "busy"})
    broken, sick, busy = (pool.states[n] for n in ("broken", "sick", "busy"))
    now = time.monotonic()
    for _ in range(broken.breaker.failures):
        broken.breaker.record_failure(now)
    sick.healthy = False
    busy.in_flight = 50
    assert names(pool.tier(Tier.OPEN)) == ["busy", "sick", "broken"]
    broken.breaker.opened_at = now - broken.breaker.cooldown_s - 1  # cooled down: its probe may go first
    assert names(pool.tier(Tier.OPEN))[0] == "broken"


def test_tier_lists_only_its_members() -> None:
    pool = make_pool({"name": "o"}, {"name": "c", "tier": "closed"})
    assert names(pool.tier(Tier.OPEN)) == ["o"]
    assert names(pool.tier(Tier.CLOSED)) == ["c"]


async def test_slots_then_a_bounded_queue_then_saturated() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 2, "max_queue": 1})
    a = pool.states["a"]
    await pool.acquire(a)
    await pool.acquire(a)
    assert (a.in_flight, a.waiting) == (2, 0)
    queued = asyncio.create_task(pool.acquire(a))
    await asyncio.sleep(0)
    assert not queued.done()
    assert (a.in_flight, a.waiting) == (2, 1)
    with pytest.raises(Saturated) as refused:  # slots and queue full: refused at once, not queued
        await pool.acquire(a)
    assert refused.value.backend == "a"
    assert refused.value.retryable  # another backend may take it
    pool.release(a)  # a slot frees up: the queued request takes it
    await asyncio.wait_for(queued, timeout=5)
    assert (a.in_flight, a.waiting) == (2, 0)
    pool.release(a)
    pool.release(a)
    assert (a.in_flight, a.waiting) == (0, 0)


async def test_no_queue_means_saturated_as_soon_as_the_slots_are_taken() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1, "max_queue": 0})
    a = pool.states["a"]
    await pool.acquire(a)
    with pytest.raises(Saturated):
        await pool.acquire(a)
    pool.release(a)
    await pool.acquire(a)
    assert a.in_flight == 1


async def test_a_queued_request_waits_no_longer_than_it_is_told() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1, "max_queue": 4})
    a = pool.states["a"]
    await pool.acquire(a)
    with pytest.raises(UpstreamTimeout):
        await pool.acquire(a, max_wait_s=0.05)
    assert (a.in_flight, a.waiting) == (1, 0)  # the place in the queue was given back


def _request() -> ChatRequest:
    return ChatRequest(model="open", messages=[Message.text("user", "hi")])


async def test_dispatcher_overflows_a_saturated_backend_to_the_next_target() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1, "max_queue": 0}, {"name": "b"})
    a, b = pool.states["a"], pool.states["b"]
    dispatcher = Dispatcher(pool, DispatchConfig(deadline_s=30))
    gate = stub(a).gate = asyncio.Event()
    held = asyncio.create_task(dispatcher.complete(_request(), [a, b]))
    await asyncio.wait_for(stub(a).entered.wait(), timeout=5)  # the first request holds a's only slot
    _, served = await dispatcher.complete(_request(), [a, b])
    assert served.state is b
    assert served.attempts.failed == ["a"]
    assert isinstance(served.attempts.last, Saturated)
    assert stub(a).calls == 1  # the overflow never reached a
    assert a.breaker.state == "closed"  # saturation is not a fault of the backend
    gate.set()
    _, first = await asyncio.wait_for(held, timeout=5)
    assert first.state is a
    assert (a.in_flight, b.in_flight) == (0, 0)


async def test_dispatcher_with_every_target_saturated_is_a_clean_saturated_error() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1, "max_queue": 0})
    a = pool.states["a"]
    dispatcher = Dispatcher(pool, DispatchConfig(deadline_s=30))
    gate = stub(a).gate = asyncio.Event()
    held = asyncio.create_task(dispatcher.complete(_request(), [a]))
    await asyncio.wait_for(stub(a).entered.wait(), timeout=5)
    with pytest.raises(Saturated):
        await dispatcher.complete(_request(), [a])
    gate.set()
    await asyncio.wait_for(held, timeout=5)
    assert a.in_flight == 0


async def test_dispatcher_queue_wait_is_bounded_by_the_request_deadline() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1, "max_queue": 8})
    a = pool.states["a"]
    patient, hurried = Dispatcher(pool, DispatchConfig(deadline_s=30)), Dispatcher(pool, DispatchConfig(deadline_s=0.2))
    gate = stub(a).gate = asyncio.Event()
    held = asyncio.create_task(patient.complete(_request(), [a]))
    await asyncio.wait_for(stub(a).entered.wait(), timeout=5)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="no concurrency slot"):
        await hurried.complete(_request(), [a])
    assert time.monotonic() - started < 5  # generous: the deadline is 0.2 s, not "whenever a slot frees up"
    assert a.waiting == 0
    gate.set()
    await asyncio.wait_for(held, timeout=5)


async def test_a_lease_pairs_the_slot_with_one_verdict() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1, "breaker_failures": 1})
    state = pool.states["a"]
    async with pool.lease(state) as lease:
        assert state.in_flight == 1
        assert state.slots.locked()
        lease.failure("boom")
    assert state.in_flight == 0
    assert not state.slots.locked()
    assert state.breaker.state == "open"
    assert state.breaker.refuses(time.monotonic())


async def test_a_lease_ended_without_verdict_frees_the_half_open_probe() -> None:
    pool = make_pool({"name": "a", "breaker_failures": 1, "breaker_cooldown_s": 0.01})
    state = pool.states["a"]
    state.breaker.record_failure(time.monotonic())
    await asyncio.sleep(0.02)
    assert state.breaker.allow(time.monotonic())  # the probe
    assert not state.breaker.allow(time.monotonic())
    with pytest.raises(asyncio.CancelledError):
        async with pool.lease(state):
            raise asyncio.CancelledError
    assert state.in_flight == 0
    assert state.breaker.allow(time.monotonic())  # no verdict was given: another probe may go


async def test_a_kept_lease_holds_its_slot_until_closed() -> None:
    pool = make_pool({"name": "a", "max_concurrency": 1})
    state = pool.states["a"]
    async with pool.lease(state) as lease:
        kept = lease.keep()
    assert state.in_flight == 1
    kept.success()
    kept.close()
    kept.close()  # once only
    assert state.in_flight == 0
    assert state.served == 1


class Probed(MockBackend):
    """A mock whose active health check answers ``up``."""

    up = True

    async def health(self) -> bool:
        return self.up


async def test_a_health_check_that_sees_the_outage_end_closes_the_circuit() -> None:
    pool = pool_of(lambda config: Probed(config, Gated()), {"name": "a"}, {"name": "b"})
    a, b = pool.states["a"], pool.states["b"]
    for state in (a, b):
        for _ in range(state.breaker.failures):
            pool.failure(state, "HTTP 500")
    assert (a.breaker.state, b.breaker.state) == ("open", "open")
    assert pool.ailing() == [a, b]
    probe = a.backend
    assert isinstance(probe, Probed)
    probe.up = False
    assert await pool.check_health([a]) == {"a": False}  # the check sees a down
    probe.up = True
    assert await pool.check_health() == {"a": True, "b": True}
    assert a.breaker.state == "closed"  # down, then up again: recovered, its circuit closed at once
    assert b.breaker.state == "open"  # its check passed all along: no news, the breaker's cooldown decides
    assert pool.ailing() == [b]
