"""Whether the shared store answers, and what each limit does while it does not: pure, the clock passed in.

>>> h = Health(since=0.0)
>>> h.fail("connection refused", now=5.0)
True
>>> h.fail("connection refused", now=6.0)  # already down: not a new outage
False
>>> (h.up, h.down_for(now=8.0))
(False, 3.0)
>>> h.recover(now=9.0)  # seconds it was down
4.0

>>> policy = OnUnavailable()  # budget: closed, rate: local
>>> alone(Limits(requests_per_minute=90), policy, share=1 / 3)
Limits(budget_usd_per_month=None, over_budget='reject', requests_per_minute=30, tokens_per_minute=None)
>>> alone(Limits(budget_usd_per_month=5.0, requests_per_minute=90), policy, share=1.0)
'budget'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tiergate.accounting.budgets import Limits
from tiergate.config import OnUnavailable

__all__ = ["Health", "alone"]


@dataclass(slots=True)
class Health:
    """Up, or down since a moment with the last error. Transitions are what the caller logs and counts."""

    since: float  # when the current state began
    up: bool = True
    last_error: str | None = None

    def fail(self, error: str, now: float) -> bool:
        """Record a failure; ``True`` when it starts an outage (the store was up until now)."""
        self.last_error = error
        if not self.up:
            return False
        self.up, self.since = False, now
        return True

    def recover(self, now: float) -> float | None:
        """The store answered; the length of the outage it ends, or ``None`` if it was up."""
        if self.up:
            return None
        outage = now - self.since
        self.up, self.since, self.last_error = True, now, None
        return outage

    def down_for(self, now: float) -> float:
        return 0.0 if self.up else now - self.since


def _scaled(limit: int | None, share: float) -> int | None:
    return None if limit is None else max(1, math.floor(limit * share))


def alone(lim: Limits, policy: OnUnavailable, share: float) -> Limits | str:
    """The limits one replica enforces by itself while the shared store is down, or the limit (``"budget"``,
    ``"rate"``) that fails closed and so refuses the request.

    A budget never has a local stand-in: one replica cannot know what the others spend. ``open`` lets the
    requests through (their cost reaches the shared spend when the store is back); ``local`` applies each rate
    limit times ``share`` in this replica alone (1/N of the limit for N replicas keeps the total).
    """
    rated = lim.requests_per_minute is not None or lim.tokens_per_minute is not None
    if lim.budget_usd_per_month is not None and policy.budget == "closed":
        return "budget"
    if rated and policy.rate == "closed":
        return "rate"
    if rated and policy.rate == "local":
        return Limits(
            requests_per_minute=_scaled(lim.requests_per_minute, share),
            tokens_per_minute=_scaled(lim.tokens_per_minute, share),
        )
    return Limits()
