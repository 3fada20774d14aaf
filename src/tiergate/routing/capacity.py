"""Capacity-aware threshold: idle open-weight capacity moves the router's threshold toward the open tier.

Owned GPUs cost the same busy or idle, so while the open tier has room a borderline prompt may as well stay
there; the move is bounded by a quality floor the operator sets (``router.capacity.quality_floor``: a fraction of
strong-only quality on the artifact's calibration set, read off its quality curve), and undone as the open tier
fills up. The open tier's occupancy is its requests in flight and queued over its slots (``max_concurrency``),
over the backends that are up. At or under ``idle_below`` the threshold is the floor's; at or over
``busy_above`` it is the base one; linear between. The route says when it moved:
``router:0.63<0.66;capacity:0.61->0.66@open=0.05``.

Only the learned router has a quality curve; other kinds keep their threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from tiergate.config import CapacityConfig
from tiergate.dispatch.pool import Pool
from tiergate.routing.base import Router
from tiergate.types import Tier

__all__ = ["Capacity", "CapacityView", "open_occupancy"]


@runtime_checkable
class HasQualityCurve(Protocol):
    threshold: float

    def threshold_for_quality(self, fraction: float) -> float | None: ...


@dataclass(frozen=True, slots=True)
class CapacityView:
    """Where the threshold stands now (for the dashboard)."""

    enabled: bool
    open_occupancy: float | None
    base_threshold: float
    threshold: float
    floor_threshold: float | None
    quality_floor: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def open_occupancy(pool: Pool) -> float | None:
    """Requests in flight and queued on the open tier's healthy backends, over their slots (``None``: none up)."""
    states = [s for s in pool.tier(Tier.OPEN) if s.healthy and s.breaker.state != "open"]
    slots = sum(s.config.max_concurrency for s in states)
    if not slots:
        return None
    return sum(s.in_flight + s.waiting for s in states) / slots


class Capacity:
    def __init__(self, config: CapacityConfig) -> None:
        self.config = config

    def _idle(self, occupancy: float) -> float:
        """1 at or under ``idle_below``, 0 at or over ``busy_above``, linear between."""
        low, high = self.config.idle_below, self.config.busy_above
        return min(1.0, max(0.0, (high - occupancy) / (high - low)))

    def threshold(self, router: Router, pool: Pool) -> tuple[float | None, str | None]:
        """The threshold to use now and the route's reason, or ``(None, None)``: the router's own."""
        view = self.view(router, pool)
        if view.threshold <= view.base_threshold or view.open_occupancy is None:
            return None, None
        reason = f"capacity:{view.base_threshold:.2f}->{view.threshold:.2f}@open={view.open_occupancy:.2f}"
        return view.threshold, reason

    def view(self, router: Router, pool: Pool) -> CapacityView:
        base = router.threshold
        floor = None
        if isinstance(router, HasQualityCurve):
            floor = router.threshold_for_quality(self.config.quality_floor)
        occupancy = open_occupancy(pool) if pool.has_tier(Tier.CLOSED) else None
        threshold = base
        if self.config.enabled and floor is not None and floor > base and occupancy is not None:
            threshold = base + (floor - base) * self._idle(occupancy)
        return CapacityView(self.config.enabled, occupancy, base, threshold, floor, self.config.quality_floor)
