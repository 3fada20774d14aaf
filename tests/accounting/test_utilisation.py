"""Measured utilisation of an open backend, and its amortised and marginal costs, checked by hand.

The meter below is a $3.60/h GPU rated at 100 output tokens/s with a 100 s window, so:

    full-utilisation price  = 3.60 / (3600 x 100)        = $1e-5 per token
    window capacity         = 100 tok/s x 100 s          = 10,000 tokens
    GPU cost of one window  = 3.60 x 100 / 3600          = $0.10
"""

from __future__ import annotations

import pytest

from tiergate.accounting.utilisation import Meter

FULL_RATE = 1e-5


def meter(window_s: float = 100.0, gpus: int = 1) -> Meter:
    return Meter(gpu_hourly_usd=3.6, gpus=gpus, tokens_per_second=100, window_s=window_s, started=0.0)


def test_amortised_cost_spreads_the_window_over_its_tokens() -> None:
    m = meter()
    # 2,000 of 10,000 tokens: 20% busy; 2,000 x 1e-5 / 0.2 = $0.10, the whole window's GPU cost.
    first = m.charge(2000, now=100.0)
    assert first.utilisation == pytest.approx(0.2)
    assert first.usd == pytest.approx(0.10)
    # 3,000 more 10 s later: 5,000 in the window, 50% busy; 3,000 x 1e-5 / 0.5 = $0.06.
    second = m.charge(3000, now=110.0)
    assert second.utilisation == pytest.approx(0.5)
    assert second.usd == pytest.approx(0.06)


def test_gpus_multiply_the_price() -> None:
    # Two GPUs per replica, same throughput: twice the price of every token.
    assert meter(gpus=2).charge(2000, now=100.0).usd == pytest.approx(0.20)


def test_marginal_cost_is_zero_while_capacity_is_idle() -> None:
    m = meter()
    assert m.charge(9000, now=100.0).marginal_usd == 0.0
    # 9,000 + 3,000 = 12,000 > 10,000: the last 2,000 tokens needed GPU time that was not idle.
    over = m.charge(3000, now=101.0)
    assert over.utilisation == 1.0
    assert over.marginal_usd == pytest.approx(2000 * FULL_RATE)
    # At full utilisation the amortised price is the floor: 3,000 x 1e-5.
    assert over.usd == pytest.approx(3000 * FULL_RATE)
    # Wholly beyond capacity: every token is marginal.
    assert m.charge(500, now=102.0).marginal_usd == pytest.approx(500 * FULL_RATE)


def test_old_deliveries_leave_the_window() -> None:
    m = meter()
    m.charge(5000, now=100.0)
    assert m.delivered(199.9) == 5000
    assert m.delivered(200.0) == 0
    assert m.utilisation(200.0) == 0.0


def test_the_window_is_shorter_just_after_start_up() -> None:
    m = meter()
    # 10 s after start: capacity 1,000 tokens; 100 tokens is 10%, costing the 10 s of GPU: 3.6 x 10 / 3600 = $0.01.
    charge = m.charge(100, now=10.0)
    assert charge.utilisation == pytest.approx(0.1)
    assert charge.usd == pytest.approx(0.01)
    fresh = meter()
    assert fresh.capacity(0.0) == 0.0
    assert fresh.utilisation(0.0) == 0.0
    assert fresh.utilisation(0.0, extra=1) == 1.0  # something delivered in no time: as busy as it gets


def test_price_estimates_without_recording() -> None:
    m = meter()
    estimate = m.price(2000, now=100.0)
    assert estimate.usd == pytest.approx(0.10)
    assert m.delivered(100.0) == 0
    assert m.charge(2000, now=100.0) == estimate


def test_no_tokens_cost_nothing() -> None:
    m = meter()
    m.charge(1000, now=100.0)
    nothing = m.charge(0, now=100.0)
    assert (nothing.usd, nothing.marginal_usd) == (0.0, 0.0)
    assert nothing.utilisation == pytest.approx(0.1)
    assert m.charge(0, now=1000.0).utilisation == 0.0


def test_a_free_gpu_costs_nothing() -> None:
    free = Meter(gpu_hourly_usd=0.0, gpus=1, tokens_per_second=40, window_s=60, started=0.0)
    charge = free.charge(100, now=10.0)
    assert (charge.usd, charge.marginal_usd) == (0.0, 0.0)
    assert charge.utilisation == pytest.approx(0.25)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        Meter(gpu_hourly_usd=1.0, gpus=1, tokens_per_second=10, window_s=0, started=0.0)
    with pytest.raises(ValueError, match="tokens_per_second"):
        Meter(gpu_hourly_usd=1.0, gpus=1, tokens_per_second=0, window_s=10, started=0.0)
