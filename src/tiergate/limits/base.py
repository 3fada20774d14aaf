"""The contract of a limiter: what admission and accounting ask of the budgets and rate limits.

Two implementations: :class:`~tiergate.limits.local.LocalLimiter` (this process's book, without Redis) and
:class:`~tiergate.limits.shared.SharedLimiter` (every replica's numbers in Redis). Admission calls
:meth:`Limiter.reserve` before dispatch; accounting calls :meth:`Limiter.settle` once when the request ends,
on every path (it never blocks: a shared limiter sends settlements off the request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Protocol

from tiergate.accounting.budgets import Limits, Reservation

__all__ = ["Limiter", "Settler", "SpendSource"]

#: What each key has spent since a moment (the start of the month): ``Ledger.spend_by_key``.
SpendSource = Callable[[datetime], Awaitable[Mapping[str, float]]]


class Settler(Protocol):
    """All that accounting needs: a book that settles (``Budgets`` itself, or any :class:`Limiter`)."""

    def settle(self, reservation: Reservation | None, usd: float, tokens: int) -> None: ...


class Limiter(Settler, Protocol):
    def limits(self, key: str) -> Limits | None:
        """The limits in force for ``key`` now, ``None`` when it has none (it is then never tracked)."""
        ...

    def revoked(self, key: str) -> bool:
        """Whether ``key`` was revoked at run time (``tiergate keys revoke``)."""
        ...

    async def start(self, spend: SpendSource) -> None:
        """Load what is needed to enforce budgets (this month's spend), start background work."""
        ...

    async def reserve(
        self, key: str, usd: float, tokens: int, *, fallback_usd: float | None = None
    ) -> Reservation | None:
        """Hold ``usd`` and ``tokens`` for one request of ``key``, or raise ``OverLimit`` (over a limit) or
        ``LimitsUnavailable`` (the limits cannot be checked and fail closed). ``fallback_usd``: the estimate on
        the open tier, for a key that downgrades (see ``Budgets.admit``). ``None``: the key has no limits."""
        ...

    def settle(self, reservation: Reservation | None, usd: float, tokens: int) -> None:
        """Replace a reservation by what the request really cost (0 for a failed one). Idempotent."""
        ...

    def affordable(self, key: str, usd: float) -> bool:
        """Would ``usd`` more fit in ``key``'s monthly budget? Touches nothing (the router's shadow pairs ask
        before they start)."""
        ...

    def charge(self, key: str, usd: float) -> None:
        """Spend ``usd`` on ``key`` outside any request (shadow answers and judging): the budget counts it, the
        rate limits do not."""
        ...

    def status(self) -> dict[str, object]:
        """For ``/readyz``: where the limits live and whether they are enforced as configured."""
        ...

    async def close(self) -> None:
        """Flush what is pending (graceful shutdown) and release connections."""
        ...
