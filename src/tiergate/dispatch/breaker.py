"""A circuit breaker per backend: a small pure state machine, driven by the caller's clock.

    closed --(N failures within window_s)--> open --(cooldown_s passes)--> half-open
    half-open --(the probe succeeds)--> closed;  half-open --(the probe fails)--> open

While open, the backend is skipped (the dispatcher goes to the next target). In half-open, exactly one
request is let through as the probe.

    >>> b = Breaker(failures=2, window_s=10, cooldown_s=5)
    >>> b.record_failure(now=0.0); b.record_failure(now=1.0); b.state
    'open'
    >>> b.refuses(now=3.0), b.refuses(now=6.0)
    (True, False)
    >>> b.allow(now=3.0), b.allow(now=6.5), b.allow(now=6.6)
    (False, True, False)
    >>> b.record_success(now=7.0); b.state
    'closed'
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half-open"]


@dataclass(slots=True)
class Breaker:
    failures: int = 5
    window_s: float = 30.0
    cooldown_s: float = 15.0
    state: State = "closed"
    opened_at: float = 0.0
    probing: bool = False
    _recent: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """May a request go to this backend now? In half-open, only the first caller (the probe) may."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self.opened_at < self.cooldown_s:
                return False
            self.state = "half-open"
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def refuses(self, now: float) -> bool:
        """Is the circuit open and still cooling down (no probe would be let through at ``now``)?"""
        return self.state == "open" and now - self.opened_at < self.cooldown_s

    def record_success(self, now: float) -> None:
        self.state = "closed"
        self.probing = False
        self._recent.clear()

    def record_failure(self, now: float) -> None:
        if self.state == "half-open":
            self._open(now)
            return
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.failures:
            self._open(now)

    def release(self) -> None:
        """The probe ended without a verdict (cancelled, client error): let another probe through."""
        self.probing = False

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
        self.probing = False
        self._recent.clear()
