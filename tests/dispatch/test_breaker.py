"""The circuit breaker as a pure state machine: no I/O, the clock is an argument."""

from __future__ import annotations

from tiergate.dispatch.breaker import Breaker


def test_opens_after_n_failures_within_the_window() -> None:
    b = Breaker(failures=3, window_s=10, cooldown_s=5)
    b.record_failure(0)
    b.record_failure(1)
    assert b.state == "closed"
    b.record_failure(2)
    assert str(b.state) == "open"  # (str(): mypy narrowed the attribute to "closed" above)
    assert not b.allow(3)


def test_failures_outside_the_window_do_not_count() -> None:
    b = Breaker(failures=3, window_s=10, cooldown_s=5)
    b.record_failure(0)
    b.record_failure(1)
    b.record_failure(20)
    assert b.state == "closed"


def test_half_open_lets_exactly_one_probe_through() -> None:
    b = Breaker(failures=1, window_s=10, cooldown_s=5)
    b.record_failure(0)
    assert not b.allow(4.9)
    assert b.allow(5.0)
    assert b.state == "half-open"
    assert not b.allow(5.1)


def test_probe_success_closes_and_forgets() -> None:
    b = Breaker(failures=2, window_s=10, cooldown_s=5)
    b.record_failure(0)
    b.record_failure(0)
    assert b.allow(6)
    b.record_success(6.5)
    assert b.state == "closed"
    b.record_failure(7)
    assert b.state == "closed"  # the old failures were forgotten


def test_probe_failure_reopens_for_another_cooldown() -> None:
    b = Breaker(failures=1, window_s=10, cooldown_s=5)
    b.record_failure(0)
    assert b.allow(5)
    b.record_failure(5.5)
    assert b.state == "open"
    assert not b.allow(10)
    assert b.allow(10.5)


def test_released_probe_lets_another_through() -> None:
    b = Breaker(failures=1, window_s=10, cooldown_s=5)
    b.record_failure(0)
    assert b.allow(5)
    b.release()
    assert b.allow(5.1)
