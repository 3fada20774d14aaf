"""Retry and failover decisions as small pure functions (no I/O, no clock of their own).

>>> import random
>>> policy = RetryPolicy(base_s=0.1, cap_s=2.0, retry_after_cap_s=5.0)
>>> policy.backoff(attempt=3, retry_after=None, rng=random.Random(0)) <= 0.8
True
>>> policy.backoff(attempt=1, retry_after=30.0, rng=random.Random(0))
5.0
>>> rate_limited = UpstreamError("HTTP 429", backend="b", upstream_status=429)
>>> 0.4 <= policy.pause(rate_limited, attempt=1, rng=random.Random(0)) <= 1.1  # a floor of its own
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tiergate.config import BackendConfig
from tiergate.errors import RETRYABLE_STATUS, ContextLengthExceeded, PrefillRejected, Silent, UpstreamError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2  # per backend, the first try included
    base_s: float = 0.1
    cap_s: float = 2.0
    retry_after_cap_s: float = 5.0
    #: A rate limit (429) without ``Retry-After`` is retried after a pause drawn from this range, not the backoff.
    rate_limit_min_s: float = 0.4
    rate_limit_max_s: float = 1.1

    def pause(self, exc: UpstreamError, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before trying the backend that failed with ``exc`` again: its ``Retry-After`` (capped);
        for a rate limit without one, a pause drawn from ``[rate_limit_min_s, rate_limit_max_s]`` (a provider that
        says "too many requests" is not asked again within milliseconds); else the backoff."""
        if exc.retry_after is None and rate_limited(exc):
            return rng.uniform(self.rate_limit_min_s, self.rate_limit_max_s)
        return self.backoff(attempt, exc.retry_after, rng)

    def backoff(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before try ``attempt + 1``: the server's Retry-After (capped) or full jitter."""
        rest = self.rest(retry_after)
        if rest is not None:
            return rest
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))

    def rest(self, retry_after: float | None, rate_limit: bool = False) -> float | None:
        """How long a backend that answered with ``Retry-After`` is put last for other requests (capped); a rate
        limit (``rate_limit``) without one, for ``rate_limit_min_s``.

        >>> RetryPolicy(retry_after_cap_s=5.0).rest(30.0), RetryPolicy().rest(None), RetryPolicy().rest(None, True)
        (5.0, None, 0.4)
        """
        if retry_after is None:
            return self.rate_limit_min_s if rate_limit else None
        return min(max(retry_after, 0.0), self.retry_after_cap_s)


def retry_same(
    exc: UpstreamError, attempt: int, policy: RetryPolicy, bytes_sent: bool, sibling_ready: bool = False
) -> bool:
    """Try the same backend again? Only for retryable failures before any byte reached the client, never for a
    silent backend (:class:`Silent`: no first token, a stall), and only when no other replica of its tier (same
    priority) is ready to take the request at once (``sibling_ready``).

    A failed exchange says more about the backend than about the request, so a ready sibling goes first and
    without a backoff, as load balancers do (Envoy's previous-hosts retry predicate, nginx's
    ``proxy_next_upstream``); the last ready replica of a tier is retried on itself, after a backoff.

    >>> err, policy = UpstreamError("503", backend="r1", upstream_status=503), RetryPolicy()
    >>> retry_same(err, 1, policy, bytes_sent=False), retry_same(err, 1, policy, bytes_sent=False, sibling_ready=True)
    (True, False)
    """
    if sibling_ready or bytes_sent or not exc.retryable or attempt >= policy.attempts or isinstance(exc, Silent):
        return False
    return exc.upstream_status is None or exc.upstream_status in RETRYABLE_STATUS


def rate_limited(exc: UpstreamError) -> bool:
    """Did the backend say "too many requests" (HTTP 429, Anthropic's ``rate_limit_error``)?"""
    return exc.upstream_status == 429


def may_fail_over(exc: UpstreamError) -> bool:
    """Try another backend? Client errors would fail the same way anywhere, except a context overflow and a
    refused assistant prefill (another backend may continue it)."""
    return exc.retryable or isinstance(exc, ContextLengthExceeded | PrefillRejected)


def fits_context(failed_window: int | None, candidate_window: int | None) -> bool:
    """After a context-length error, only a backend with a strictly larger (known) window may help."""
    if candidate_window is None:
        return False
    return failed_window is None or candidate_window > failed_window


def first_token_budget(config: BackendConfig, input_tokens: int) -> float:
    """Seconds a backend has to send a stream's first event: ``first_token_timeout_s`` plus
    ``first_token_per_1k_input_s`` per 1,000 input tokens (a 200k-token prompt takes longer to start than a short
    one). A backend silent for longer is left, and not asked again within the request (:class:`Silent`).

    >>> b = BackendConfig(name="b", tier="open", kind="x", first_token_timeout_s=10, first_token_per_1k_input_s=0.25)
    >>> first_token_budget(b, 20), first_token_budget(b, 200_000)
    (10.005, 60.0)
    """
    return config.first_token_timeout_s + config.first_token_per_1k_input_s * max(input_tokens, 0) / 1000


def answer_budget(config: BackendConfig, input_tokens: int, max_tokens: int | None) -> float | None:
    """Seconds a backend has for a whole non-streaming answer it is asked for whole (not gathered from a stream: Claude
    given the caller's own body, whose message comes back as Claude sends it): the first-token budget plus
    ``answer_per_1k_output_s`` per 1,000 of the request's ``max_tokens``. Such an answer has no first byte before
    its last (Claude sends a whole message's status and headers once it is written), so the budget allows for the
    longest answer asked for. ``None`` (no such budget: ``timeout_s`` alone) where the backend sets none or the
    request has no ``max_tokens``.

    >>> b = BackendConfig(name="b", tier="closed", kind="x", first_token_timeout_s=10, answer_per_1k_output_s=60)
    >>> answer_budget(b, 0, 200), answer_budget(b, 0, None)
    (22.0, None)
    """
    if config.answer_per_1k_output_s is None or max_tokens is None:
        return None
    return first_token_budget(config, input_tokens) + config.answer_per_1k_output_s * max(max_tokens, 0) / 1000
