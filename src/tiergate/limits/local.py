"""Limits kept in this process (no ``redis:`` configured): one replica's :class:`Budgets` on the wall clock."""

from __future__ import annotations

import time

from tiergate.accounting.budgets import Budgets, Limits, Reservation, month_start
from tiergate.config import KeyConfig
from tiergate.limits.base import SpendSource

__all__ = ["LocalLimiter"]


class LocalLimiter:
    def __init__(self, keys: list[KeyConfig]) -> None:
        self.book = Budgets.from_keys(keys)

    def limits(self, key: str) -> Limits | None:
        return self.book.limits(key)

    def revoked(self, key: str) -> bool:
        return False  # keys change with tiergate.yaml and a restart; run-time changes need the shared store

    async def start(self, spend: SpendSource) -> None:
        now = time.time()
        self.book.load(await spend(month_start(now)), now)

    async def reserve(
        self, key: str, usd: float, tokens: int, *, fallback_usd: float | None = None
    ) -> Reservation | None:
        return self.book.admit(key, usd, tokens, time.time(), fallback_usd=fallback_usd)

    def settle(self, reservation: Reservation | None, usd: float, tokens: int) -> None:
        self.book.settle(reservation, usd, tokens)

    def affordable(self, key: str, usd: float) -> bool:
        return self.book.affordable(key, usd, time.time())

    def charge(self, key: str, usd: float) -> None:
        self.book.charge(key, usd, time.time())

    def status(self) -> dict[str, object]:
        return {"store": "process"}

    async def close(self) -> None:
        return None
