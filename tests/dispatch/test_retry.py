"""Retry and failover decisions as pure functions."""

from __future__ import annotations

import random

import pytest

from tiergate.config import DispatchConfig, parse_config
from tiergate.dispatch.retry import RetryPolicy, fits_context, may_fail_over, retry_same
from tiergate.errors import (
    ConfigError,
    ContextLengthExceeded,
    Silent,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

POLICY = RetryPolicy(attempts=3, base_s=0.1, cap_s=1.0, retry_after_cap_s=5.0)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status: int) -> None:
    assert retry_same(UpstreamUnavailable("x", backend="b", upstream_status=status), 1, POLICY, bytes_sent=False)


def test_connect_errors_and_timeouts_before_bytes_are_retried() -> None:
    assert retry_same(UpstreamUnavailable("refused", backend="b"), 1, POLICY, bytes_sent=False)
    assert retry_same(UpstreamTimeout("slow", backend="b"), 1, POLICY, bytes_sent=False)


def test_nothing_is_retried_after_bytes_were_sent() -> None:
    assert not retry_same(UpstreamTimeout("stall", backend="b"), 1, POLICY, bytes_sent=True)


def test_client_errors_are_never_retried() -> None:
    err = UpstreamClientError("bad", backend="b", upstream_status=400)
    assert not retry_same(err, 1, POLICY, bytes_sent=False)
    assert not may_fail_over(err)


def test_attempts_are_bounded() -> None:
    err = UpstreamUnavailable("x", backend="b", upstream_status=503)
    assert retry_same(err, 2, POLICY, bytes_sent=False)
    assert not retry_same(err, 3, POLICY, bytes_sent=False)


def test_context_length_may_fail_over_but_only_to_a_larger_window() -> None:
    err = ContextLengthExceeded("too long", backend="b", upstream_status=400)
    assert not retry_same(err, 1, POLICY, bytes_sent=False)
    assert may_fail_over(err)
    assert fits_context(8192, 200_000)
    assert not fits_context(8192, 8192)
    assert not fits_context(8192, 4096)
    assert not fits_context(8192, None)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(1, 8):
        bound = min(1.0, 0.1 * 2 ** (attempt - 1))
        samples = [POLICY.backoff(attempt, None, rng) for _ in range(200)]
        assert all(0 <= s <= bound for s in samples)
        assert max(samples) > bound * 0.8  # jitter spans the range


def test_retry_after_is_honoured_up_to_a_cap() -> None:
    rng = random.Random(0)
    assert POLICY.backoff(1, 0.7, rng) == 0.7
    assert POLICY.backoff(1, 120.0, rng) == 5.0


def test_malformed_replies_may_fail_over() -> None:
    assert may_fail_over(UpstreamError("garbage", backend="b"))


def test_a_silent_backend_is_not_retried_on_itself() -> None:
    silent = Silent("no first token within 1.0s", backend="b")
    assert not retry_same(silent, 1, POLICY, bytes_sent=False)
    assert may_fail_over(silent)  # but another backend may answer


def test_a_rate_limit_without_retry_after_has_a_backoff_floor_of_its_own() -> None:
    """A 429 without ``Retry-After`` waits 0.4-1.1 s (other gateways' spacing), never the backoff's milliseconds; a
    ``Retry-After`` is honoured as given (capped); other failures keep the exponential backoff."""
    policy = RetryPolicy(base_s=0.05, cap_s=2.0, retry_after_cap_s=5.0)
    rng = random.Random(3)
    limited = UpstreamUnavailable("HTTP 429", backend="b", upstream_status=429)
    told = UpstreamUnavailable("HTTP 429", backend="b", upstream_status=429, retry_after=0.2)
    failed = UpstreamUnavailable("HTTP 503", backend="b", upstream_status=503)
    pauses = [policy.pause(limited, 1, rng) for _ in range(500)]
    assert min(pauses) >= 0.4
    assert max(pauses) <= 1.1
    assert max(pauses) - min(pauses) > 0.5  # drawn across the range (jitter), not a fixed step
    assert policy.pause(told, 1, rng) == 0.2
    assert max(policy.pause(failed, 1, rng) for _ in range(500)) <= 0.05
    assert policy.rest(None, rate_limit=True) == 0.4  # other requests put it last for the floor, too


def test_the_rate_limit_range_is_configurable_and_checked() -> None:
    config = DispatchConfig(rate_limit_backoff_min_s=1.0, rate_limit_backoff_max_s=2.0)
    assert (config.rate_limit_backoff_min_s, config.rate_limit_backoff_max_s) == (1.0, 2.0)
    with pytest.raises(ConfigError, match="rate_limit_backoff_max_s must be at least"):
        parse_config({"dispatch": {"rate_limit_backoff_min_s": 2.0, "rate_limit_backoff_max_s": 1.0}})
