"""What each limit does while Redis is down, and the up/down bookkeeping: pure, no Redis."""

from __future__ import annotations

import pytest

from tiergate.accounting.budgets import Limits
from tiergate.config import OnUnavailable
from tiergate.limits.health import Health, alone

BOTH = Limits(budget_usd_per_month=5.0, requests_per_minute=90, tokens_per_minute=9000)
RATE = Limits(requests_per_minute=90, tokens_per_minute=9000)


@pytest.mark.parametrize(
    ("lim", "budget", "rate", "expected"),
    [
        (BOTH, "closed", "local", "budget"),  # the defaults: a key with a budget is refused
        (RATE, "closed", "local", Limits(requests_per_minute=30, tokens_per_minute=3000)),
        (BOTH, "open", "local", Limits(requests_per_minute=30, tokens_per_minute=3000)),
        (BOTH, "open", "closed", "rate"),
        (RATE, "closed", "closed", "rate"),
        (BOTH, "open", "open", Limits()),
        (Limits(budget_usd_per_month=5.0), "open", "closed", Limits()),  # no rate limit to close
        (Limits(requests_per_minute=2), "closed", "local", Limits(requests_per_minute=1)),  # never below one
    ],
)
def test_what_a_replica_enforces_alone(lim: Limits, budget: str, rate: str, expected: Limits | str) -> None:
    policy = OnUnavailable.model_validate({"budget": budget, "rate": rate})
    assert alone(lim, policy, share=1 / 3) == expected


def test_an_outage_is_counted_once_and_ends_with_its_length() -> None:
    h = Health(since=0.0)
    assert h.recover(now=1.0) is None  # up already: nothing ends
    assert h.fail("refused", now=2.0)
    assert not h.fail("timeout", now=3.0)
    assert (h.up, h.last_error, h.down_for(now=4.5)) == (False, "timeout", 2.5)
    assert h.recover(now=5.0) == 3.0
    assert (h.up, h.last_error, h.down_for(now=6.0)) == (True, None, 0.0)
