"""Measured utilisation of an open-weight backend, and the two costs it gives: amortised and marginal.

A backend on owned or rented GPUs costs ``gpu_hourly_usd x gpus`` an hour whether it is busy or idle. Over a
sliding window (``utilisation_window_s``, 300 s by default; the time since start-up while that is shorter)
the gateway measures what it delivered against what it could have delivered at its rated throughput::

    utilisation  = output tokens delivered in the window / (tokens_per_second x window)      (at most 1)
    amortised    = gpu_hourly_usd x gpus / (3600 x tokens_per_second x utilisation)        per output token
    marginal     = amortised at utilisation 1, for the tokens beyond the window's capacity; else 0

The amortised cost spreads the hardware bill of the window over the tokens delivered in it (the rate
delivered is ``tokens_per_second x utilisation``), so in steady traffic the ledger's amortised costs add up
to the GPU bill; a quiet backend's few tokens are dear. The marginal cost is what a request adds to the
bill: nothing while capacity is idle (the GPUs are paid for anyway), and the price of more GPU time for the
tokens that go beyond what the backend can deliver in the window.

    >>> meter = Meter(gpu_hourly_usd=3.6, gpus=1, tokens_per_second=100, window_s=100, started=0.0)
    >>> charge = meter.charge(2_000, now=100.0)       # 2,000 of a possible 10,000 tokens: 20% busy
    >>> charge.utilisation, round(charge.usd, 6), charge.marginal_usd
    (0.2, 0.1, 0.0)
    >>> meter.charge(9_000, now=150.0).marginal_usd > 0   # 11,000 > 10,000: 1,000 tokens beyond capacity
    True
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tiergate.accounting.prices import amortised_cost_per_token

__all__ = ["Charge", "Meter"]


@dataclass(frozen=True, slots=True)
class Charge:
    """What a number of output tokens cost on one open backend, at the utilisation measured with them."""

    usd: float
    marginal_usd: float
    utilisation: float


class Meter:
    """Output tokens one open backend delivered over a sliding window, and their cost. No clock of its own."""

    def __init__(
        self, *, gpu_hourly_usd: float, gpus: int, tokens_per_second: float, window_s: float, started: float
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.full_rate = amortised_cost_per_token(gpu_hourly_usd, gpus, tokens_per_second, 1.0)
        self.tokens_per_second = tokens_per_second
        self.window_s = window_s
        self.started = started
        self._deliveries: deque[tuple[float, int]] = deque()
        self._delivered = 0

    def delivered(self, now: float) -> int:
        """Output tokens delivered in the window that ends at ``now``."""
        horizon = now - self.window_s
        while self._deliveries and self._deliveries[0][0] <= horizon:
            self._delivered -= self._deliveries.popleft()[1]
        return self._delivered

    def capacity(self, now: float) -> float:
        """Output tokens the backend could have delivered in the window (shorter just after start-up)."""
        return self.tokens_per_second * min(self.window_s, max(now - self.started, 0.0))

    def utilisation(self, now: float, extra: int = 0) -> float:
        """The busy share of the window, counting ``extra`` tokens as delivered now; in [0, 1]."""
        capacity = self.capacity(now)
        delivered = self.delivered(now) + extra
        if capacity <= 0:
            return 1.0 if delivered > 0 else 0.0
        return min(1.0, delivered / capacity)

    def price(self, tokens: int, now: float) -> Charge:
        """What ``tokens`` more would cost if delivered at ``now``, without recording them (an estimate)."""
        utilisation = self.utilisation(now, tokens)
        if tokens <= 0:
            return Charge(0.0, 0.0, utilisation)
        beyond = min(tokens, max(0.0, self.delivered(now) + tokens - self.capacity(now)))
        return Charge(self.full_rate * tokens / utilisation, self.full_rate * beyond, utilisation)

    def charge(self, tokens: int, now: float) -> Charge:
        """Record ``tokens`` as delivered at ``now`` and return what they cost."""
        charge = self.price(tokens, now)
        if tokens > 0:
            self._deliveries.append((now, tokens))
            self._delivered += tokens
        return charge
