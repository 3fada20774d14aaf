"""The capacity-aware threshold on a pool of in-process backends: idle open slots move the threshold toward the
open tier down to the quality floor's, a filling open tier moves it back, and other routers keep theirs."""

from __future__ import annotations

import pytest

from tests.support.pools import pool_of
from tiergate.backends.mock import MockBackend
from tiergate.config import BackendConfig, CapacityConfig, RouterConfig
from tiergate.dispatch.pool import Pool
from tiergate.routing.capacity import Capacity, open_occupancy
from tiergate.routing.learned import LearnedRouter
from tiergate.routing.simple import RulesRouter
from tiergate.types import ChatRequest, ChatResponse, StopReason, TextPart, Usage


async def _answer(request: ChatRequest) -> ChatResponse:
    return ChatResponse(id="x", model="m", parts=[TextPart("ok")], stop_reason=StopReason.END_TURN, usage=Usage())


def _backend(config: BackendConfig) -> MockBackend:
    return MockBackend(config, _answer)


def _pool() -> Pool:
    return pool_of(
        _backend,
        {"name": "gpu", "tier": "open", "max_concurrency": 10},
        {"name": "claude", "tier": "closed"},
    )


def _busy(pool: Pool, count: int) -> None:
    state = pool.states["gpu"]
    state.in_flight = count


def test_the_threshold_follows_the_open_tiers_occupancy() -> None:
    pool, router = _pool(), LearnedRouter.default()
    capacity = Capacity(CapacityConfig(enabled=True, quality_floor=0.9, idle_below=0.2, busy_above=0.8))
    floor = router.threshold_for_quality(0.9)
    assert floor is not None
    assert floor > router.threshold
    moved, reason = capacity.threshold(router, pool)  # nothing in flight: the whole move
    assert moved == pytest.approx(floor)
    assert reason == f"capacity:{router.threshold:.2f}->{floor:.2f}@open=0.00"
    _busy(pool, 5)  # halfway between idle_below and busy_above: half the move
    moved, _ = capacity.threshold(router, pool)
    assert moved == pytest.approx(router.threshold + (floor - router.threshold) / 2)
    _busy(pool, 8)  # saturated: back to the base threshold, and the route says nothing
    assert capacity.threshold(router, pool) == (None, None)
    view = capacity.view(router, pool)
    assert (view.open_occupancy, view.threshold, view.floor_threshold) == (0.8, router.threshold, floor)


def test_off_by_default_and_only_for_a_router_with_a_quality_curve() -> None:
    pool = _pool()
    assert Capacity(CapacityConfig()).threshold(LearnedRouter.default(), pool) == (None, None)
    on = Capacity(CapacityConfig(enabled=True))
    assert on.threshold(RulesRouter(RouterConfig(kind="rules")), pool) == (None, None)
    # A floor above the router's own calibration (0.95) would move it toward the closed tier: never.
    assert Capacity(CapacityConfig(enabled=True, quality_floor=0.99)).threshold(LearnedRouter.default(), pool) == (
        None,
        None,
    )


def test_occupancy_counts_the_queue_and_skips_backends_that_are_down() -> None:
    pool = pool_of(
        _backend,
        {"name": "a", "tier": "open", "max_concurrency": 4},
        {"name": "b", "tier": "open", "max_concurrency": 4},
    )
    pool.states["a"].in_flight, pool.states["a"].waiting = 4, 2
    assert open_occupancy(pool) == pytest.approx(6 / 8)
    pool.states["b"].healthy = False
    assert open_occupancy(pool) == pytest.approx(6 / 4)
    pool.states["a"].healthy = False
    assert open_occupancy(pool) is None
