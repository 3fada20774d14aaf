"""Hedging without HTTP: a slow first try raced against the next ready target; whichever answers first is taken,
the other cancelled (its stream closed, its slot freed, no verdict on its breaker) and its try recorded ``lost``.

The mock backends wait on events the tests set, so who answers first is decided by the test, not by a clock; the
only real time is the hedge's delay (a fraction of a short first-token budget).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.pools import pool_of
from tiergate.backends.mock import MockBackend, gather
from tiergate.config import DispatchConfig, parse_config
from tiergate.dispatch import Dispatcher
from tiergate.dispatch.pool import Pool
from tiergate.dispatch.trace import Trace
from tiergate.errors import ConfigError, UpstreamUnavailable
from tiergate.types import ChatRequest, Message, StopReason, StreamEnd, StreamEvent, TextDelta, Usage

BUDGET = {"first_token_timeout_s": 2.0, "first_token_per_1k_input_s": 0.0}


class Gate:
    """A stream that opens when ``go`` is set (or fails with ``fail``), and says whether it was closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.go = asyncio.Event()
        self.fail: Exception | None = None
        self.started = asyncio.Event()
        self.closed = False

    async def __call__(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        self.started.set()
        try:
            if self.fail is not None:
                raise self.fail
            await self.go.wait()
            yield TextDelta(f"from {self.name}")
            yield StreamEnd(StopReason.END_TURN, Usage(output_tokens=1))
        finally:
            self.closed = True


def _pool(*names: str) -> Pool:
    return pool_of(lambda config: MockBackend(config, Gate(config.name)), *({"name": n, **BUDGET} for n in names))


def gate(pool: Pool, name: str) -> Gate:
    backend = pool.states[name].backend
    assert isinstance(backend, MockBackend)
    assert isinstance(backend.handler, Gate)
    return backend.handler


async def _hedged(pool: Pool, names: list[str], hedge_after: float | None = 0.05) -> tuple[Any, Trace]:
    dispatcher = Dispatcher(pool, DispatchConfig(hedge_after=hedge_after))
    trace = Trace()
    request = ChatRequest("open", [Message.text("user", "hi")], stream=True)
    _, events, served = await dispatcher.stream(request, [pool.states[n] for n in names], trace=trace)
    text = "".join(ev.text for ev in await gather(events) if isinstance(ev, TextDelta))
    return (served.state.name, text), trace


def _path(trace: Trace) -> list[tuple[str, str, str]]:
    return [(t.backend, t.purpose, t.outcome) for t in trace.tries]


async def test_the_hedge_answers_first_and_the_slow_backend_is_cancelled() -> None:
    pool = _pool("a", "b")
    gate(pool, "b").go.set()  # b answers as soon as it is asked; a never does
    (served, text), trace = await _hedged(pool, ["a", "b"])
    assert (served, text) == ("b", "from b")
    assert _path(trace) == [("a", "first", "lost"), ("b", "hedge", "ok")]
    assert gate(pool, "a").closed  # its stream closed (the upstream request cancelled)
    a = pool.states["a"]
    assert a.in_flight == 0
    assert a.breaker.state == "closed"
    assert a.last_error is None  # slower is no fault: no verdict


async def test_the_first_backend_wins_when_it_answers_before_the_hedge() -> None:
    pool = _pool("a", "b")
    a, b = gate(pool, "a"), gate(pool, "b")

    async def answer_once_b_is_asked() -> None:
        await b.started.wait()
        a.go.set()

    helper = asyncio.create_task(answer_once_b_is_asked())
    (served, text), trace = await _hedged(pool, ["a", "b"])
    await helper
    assert (served, text) == ("a", "from a")
    assert _path(trace) == [("a", "first", "ok"), ("b", "hedge", "lost")]
    assert b.closed
    assert pool.states["b"].in_flight == 0


async def test_a_failed_hedge_leaves_the_race_to_the_first_and_is_not_asked_again() -> None:
    pool = _pool("a", "b", "c")
    gate(pool, "b").fail = UpstreamUnavailable("HTTP 503", backend="b", upstream_status=503)
    gate(pool, "c").go.set()

    async def answer_after_the_hedge_failed() -> None:
        await gate(pool, "b").started.wait()
        await asyncio.sleep(0.01)
        gate(pool, "a").go.set()

    helper = asyncio.create_task(answer_after_the_hedge_failed())
    (served, _), trace = await _hedged(pool, ["a", "b", "c"])
    await helper
    assert served == "a"
    assert _path(trace) == [("a", "first", "ok"), ("b", "hedge", "failed")]
    assert gate(pool, "c").started.is_set() is False


async def test_both_sides_failing_goes_on_to_the_next_target_without_asking_the_hedge_again() -> None:
    """a stays silent past its (short) budget, its hedge b fails at once: c is next, and b is not asked twice."""
    pool = pool_of(
        lambda config: MockBackend(config, Gate(config.name)),
        {"name": "a", "first_token_timeout_s": 0.2, "first_token_per_1k_input_s": 0.0},
        {"name": "b", **BUDGET},
        {"name": "c", **BUDGET},
    )
    gate(pool, "b").fail = UpstreamUnavailable("HTTP 503", backend="b", upstream_status=503)
    gate(pool, "c").go.set()
    (served, _), trace = await _hedged(pool, ["a", "b", "c"], hedge_after=0.25)
    assert served == "c"
    assert _path(trace) == [("a", "first", "silent"), ("b", "hedge", "failed"), ("c", "failover", "ok")]
    assert all(s.in_flight == 0 for s in pool.states.values())


async def test_without_hedge_after_nothing_is_raced() -> None:
    pool = pool_of(
        lambda config: MockBackend(config, Gate(config.name)),
        {"name": "a", "first_token_timeout_s": 0.2, "first_token_per_1k_input_s": 0.0},
        {"name": "b", **BUDGET},
    )
    gate(pool, "b").go.set()
    (served, _), trace = await _hedged(pool, ["a", "b"], hedge_after=None)
    assert served == "b"
    assert _path(trace) == [("a", "first", "silent"), ("b", "failover", "ok")]  # waited out a's whole budget


def test_hedging_is_opt_in_and_its_fraction_checked() -> None:
    assert DispatchConfig().hedge_after is None
    with pytest.raises(ConfigError, match="hedge_after"):
        parse_config({"dispatch": {"hedge_after": 1.5}})
