"""Budgets and rate limits, by hand: reserve, settle, refuse, downgrade, roll over; no I/O, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tiergate.accounting.budgets import WINDOW_S, Budgets, Limits, OverLimit, month_of, month_start
from tiergate.config import KeyConfig

JAN_31 = datetime(2026, 1, 31, 23, 59, tzinfo=UTC).timestamp()
FEB_1 = datetime(2026, 2, 1, 0, 1, tzinfo=UTC).timestamp()


def book(**limits: object) -> Budgets:
    return Budgets({"team": Limits(**limits)})  # type: ignore[arg-type]


def test_keys_without_limits_are_not_tracked() -> None:
    b = Budgets({"free": Limits(), "team": Limits(budget_usd_per_month=1.0)})
    assert b.limits("free") is None
    assert b.admit("free", usd=1e9, tokens=10**9, now=0.0) is None
    assert b.admit("nobody", usd=1e9, tokens=10**9, now=0.0) is None
    assert b.limits("team") == Limits(budget_usd_per_month=1.0)


def test_limits_of_a_key_config() -> None:
    key = KeyConfig(
        name="hr", key="s", budget_usd_per_month=5, over_budget="downgrade", requests_per_minute=3, tokens_per_minute=9
    )
    assert Limits.of(key) == Limits(5.0, "downgrade", 3, 9)
    assert Budgets.from_keys([key]).limits("hr") == Limits(5.0, "downgrade", 3, 9)


def test_reservations_count_until_settled() -> None:
    b = book(budget_usd_per_month=1.0)
    first = b.admit("team", usd=0.4, tokens=100, now=0.0)
    second = b.admit("team", usd=0.4, tokens=100, now=0.0)
    assert first is not None
    assert second is not None
    assert b.reserved("team") == pytest.approx(0.8)
    with pytest.raises(OverLimit, match=r"spent \$0.0000 of its \$1.00 monthly budget \(\$0.8000 more is held"):
        b.admit("team", usd=0.4, tokens=100, now=0.0)
    b.settle(first, usd=0.1, tokens=50)
    assert (b.spent("team"), b.reserved("team")) == pytest.approx((0.1, 0.4))
    assert b.admit("team", usd=0.4, tokens=100, now=0.0) is not None  # 0.1 + 0.4 + 0.4 <= 1


def test_settle_is_idempotent_and_ignores_none() -> None:
    b = book(budget_usd_per_month=1.0)
    r = b.admit("team", usd=0.5, tokens=1, now=0.0)
    b.settle(r, usd=0.3, tokens=1)
    b.settle(r, usd=0.3, tokens=1)
    b.settle(None, usd=9.0, tokens=1)
    assert (b.spent("team"), b.reserved("team")) == pytest.approx((0.3, 0.0))


def test_exact_fit_is_admitted() -> None:
    b = book(budget_usd_per_month=1.0)
    assert b.admit("team", usd=1.0, tokens=1, now=0.0) is not None


def test_failed_request_releases_its_reservation() -> None:
    b = book(budget_usd_per_month=1.0)
    r = b.admit("team", usd=1.0, tokens=1, now=0.0)
    b.settle(r, usd=0.0, tokens=0)
    assert b.admit("team", usd=1.0, tokens=1, now=0.0) is not None


def test_downgrade_reserves_the_open_estimate() -> None:
    b = book(budget_usd_per_month=1.0, over_budget="downgrade")
    b.load({"team": 0.99}, now=0.0)
    r = b.admit("team", usd=0.5, tokens=1, now=0.0, fallback_usd=0.001)
    assert r is not None
    assert r.downgraded
    assert r.usd == 0.001
    with pytest.raises(OverLimit, match="monthly budget"):  # nowhere to downgrade to
        b.admit("team", usd=0.5, tokens=1, now=0.0)


def test_reject_mode_ignores_the_fallback() -> None:
    b = book(budget_usd_per_month=1.0)
    b.load({"team": 1.0}, now=0.0)
    with pytest.raises(OverLimit, match="refused until the budget resets"):
        b.admit("team", usd=0.01, tokens=1, now=0.0, fallback_usd=0.0)


def test_within_budget_is_never_downgraded() -> None:
    b = book(budget_usd_per_month=1.0, over_budget="downgrade")
    r = b.admit("team", usd=0.5, tokens=1, now=0.0, fallback_usd=0.0)
    assert r is not None
    assert not r.downgraded
    assert r.usd == 0.5


def test_requests_per_minute_slide() -> None:
    b = book(requests_per_minute=2)
    b.admit("team", usd=0, tokens=1, now=10.0)
    b.admit("team", usd=0, tokens=1, now=20.0)
    with pytest.raises(OverLimit, match=r"2 requests per minute; retry in 10.0 s") as err:
        b.admit("team", usd=0, tokens=1, now=60.0)
    assert err.value.retry_after == 10.0
    assert b.admit("team", usd=0, tokens=1, now=10.0 + WINDOW_S) is not None  # the first left the window


def test_tokens_per_minute_count_reserved_then_actual_tokens() -> None:
    b = book(tokens_per_minute=1000)
    r = b.admit("team", usd=0, tokens=900, now=0.0)
    with pytest.raises(OverLimit, match=r"1000 tokens per minute \(900 used"):
        b.admit("team", usd=0, tokens=200, now=1.0)
    b.settle(r, usd=0, tokens=300)  # the request used far fewer than max_tokens
    assert b.admit("team", usd=0, tokens=700, now=2.0) is not None


def test_one_request_larger_than_the_minute_says_how_to_fix_it() -> None:
    b = book(tokens_per_minute=1000)
    with pytest.raises(OverLimit, match="lower max_tokens") as err:
        b.admit("team", usd=0, tokens=5000, now=0.0)
    assert err.value.retry_after is None


def test_rate_limits_are_never_downgraded() -> None:
    b = book(requests_per_minute=1, budget_usd_per_month=1.0, over_budget="downgrade")
    b.admit("team", usd=0, tokens=1, now=0.0)
    with pytest.raises(OverLimit, match="requests per minute"):
        b.admit("team", usd=0, tokens=1, now=1.0, fallback_usd=0.0)


def test_a_new_month_starts_from_zero() -> None:
    b = book(budget_usd_per_month=1.0)
    b.load({"team": 1.0}, now=JAN_31)
    with pytest.raises(OverLimit):
        b.admit("team", usd=0.01, tokens=1, now=JAN_31)
    r = b.admit("team", usd=0.5, tokens=1, now=FEB_1)
    assert r is not None
    assert b.spent("team") == 0.0


def test_a_request_admitted_last_month_settles_into_this_one() -> None:
    b = book(budget_usd_per_month=1.0)
    old = b.admit("team", usd=0.5, tokens=1, now=JAN_31)
    new = b.admit("team", usd=0.2, tokens=1, now=FEB_1)
    b.settle(old, usd=0.4, tokens=1)
    assert (b.spent("team"), b.reserved("team")) == pytest.approx((0.4, 0.2))
    b.settle(new, usd=0.1, tokens=1)
    assert (b.spent("team"), b.reserved("team")) == pytest.approx((0.5, 0.0))


def test_month_boundaries_are_utc() -> None:
    assert month_of(JAN_31) == (2026, 1)
    assert month_of(FEB_1) == (2026, 2)
    assert month_start(FEB_1) == datetime(2026, 2, 1, tzinfo=UTC)


def test_a_request_settled_after_it_left_the_window_does_not_count_in_it() -> None:
    b = book(tokens_per_minute=1000)
    old = b.admit("team", usd=0, tokens=900, now=0.0)
    b.admit("team", usd=0, tokens=100, now=WINDOW_S + 1)  # the first has left the minute
    b.settle(old, usd=0, tokens=950)  # a long request: it settles later, using more than its estimate
    assert b.admit("team", usd=0, tokens=900, now=WINDOW_S + 2) is not None  # 100 + 900 in the minute
