"""Per-key monthly budgets and per-minute rate limits: pure bookkeeping, no I/O, no clock of its own.

This is the book of one process (:class:`tiergate.limits.LocalLimiter` runs it on the wall clock); the same
numbers shared by several replicas live in Redis (:class:`tiergate.limits.SharedLimiter`), which words its
refusals with the same functions (:func:`over_budget`, :func:`over_rate`).

A request *reserves* an upper estimate of its cost (and tokens) before it is dispatched and *settles* the
real figures when it ends. Check and reservation happen in one synchronous call, so on one event loop no
number of parallel requests can together pass a budget by more than the gap between one request's
estimate and its real cost.

    >>> book = Budgets({"team": Limits(budget_usd_per_month=1.0)})
    >>> r = book.admit("team", usd=0.6, tokens=1000, now=0.0)
    >>> book.admit("team", usd=0.6, tokens=1000, now=1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tiergate.accounting.budgets.OverLimit: key 'team' has spent $0.0000 of its $1.00 monthly budget ...
    >>> book.settle(r, usd=0.25, tokens=900)
    >>> round(book.spent("team"), 2)
    0.25

The month is the calendar month in UTC; spend so far is loaded from the ledger at start-up (:meth:`load`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from tiergate.config import KeyConfig

__all__ = [
    "WINDOW_S",
    "Budgets",
    "Limits",
    "LocalReservation",
    "OverLimit",
    "Reservation",
    "month_of",
    "month_start",
    "over_budget",
    "over_rate",
]

WINDOW_S = 60.0
Month = tuple[int, int]


def month_of(now: float) -> Month:
    t = datetime.fromtimestamp(now, UTC)
    return t.year, t.month


def month_start(now: float) -> datetime:
    """Midnight UTC on the first day of the month of ``now`` (a POSIX timestamp)."""
    year, month = month_of(now)
    return datetime(year, month, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    budget_usd_per_month: float | None = None
    over_budget: Literal["reject", "downgrade"] = "reject"
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @classmethod
    def of(cls, key: KeyConfig) -> Limits:
        return cls(key.budget_usd_per_month, key.over_budget, key.requests_per_minute, key.tokens_per_minute)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.budget_usd_per_month, self.requests_per_minute, self.tokens_per_minute))


#: A budget refusal while requests in flight hold part of the budget: try again after this many seconds.
RESERVED_RETRY_S = 5


class OverLimit(Exception):
    """The request would break a limit of its key. ``retry_after``: seconds until a rate window frees up."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def over_budget(key: str, budget: float, spent: float, reserved: float, usd: float, now: float) -> OverLimit:
    """A budget refusal. ``Retry-After``: a few seconds while requests in flight hold part of the budget (they
    may settle for less), else until the budget resets, at midnight UTC on the 1st (the SDKs retry by their own
    backoff past 60 s; a client that honours it literally waits for the new month).

    >>> over_budget("k", 1.0, 1.0, 0.0, 0.1, now=datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()).retry_after
    3600.0
    """
    if reserved > 0:
        retry = float(RESERVED_RETRY_S)
    else:
        year, month = month_of(now)
        following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        retry = max(1.0, float(round(following.timestamp() - now)))
    return OverLimit(
        f"key {key!r} has spent ${spent:.4f} of its ${budget:.2f} monthly budget"
        f" (${reserved:.4f} more is held by requests in flight) and this request may cost"
        f" up to ${usd:.4f}; it is refused until the budget resets on the 1st (UTC)",
        retry_after=retry,
    )


def over_rate(
    key: str, lim: Limits, tokens: int, *, requests: int, used: float, retry: float | None
) -> OverLimit | None:
    """The refusal of a request of ``tokens`` when ``requests`` requests and ``used`` tokens are in the key's
    last minute (``retry``: seconds until its oldest one leaves), or ``None`` when the rate limits allow it."""
    rpm = lim.requests_per_minute
    if rpm is not None and requests >= rpm:
        return OverLimit(f"key {key!r} is over its limit of {rpm} requests per minute; retry in {retry} s", retry)
    tpm = lim.tokens_per_minute
    if tpm is None:
        return None
    if tokens > tpm:
        return OverLimit(
            f"this request may use {tokens} tokens, more than key {key!r} may use in a minute ({tpm});"
            " lower max_tokens or shorten the prompt"
        )
    if used + tokens > tpm:
        return OverLimit(
            f"key {key!r} is over its limit of {tpm} tokens per minute ({used:.0f} used in the last minute,"
            f" this request may use {tokens}); retry in {retry} s",
            retry,
        )
    return None


@dataclass(slots=True, kw_only=True)
class Reservation:
    """What one admitted request holds until it is settled, wherever the book is kept."""

    key: str
    usd: float
    downgraded: bool = False
    settled: bool = False


@dataclass(slots=True, kw_only=True)
class LocalReservation(Reservation):
    """A reservation in this process's book."""

    month: Month
    window_entry: list[float]  # [admitted at, tokens, 1.0 while in the window], shared with the key's window


@dataclass(slots=True)
class _Account:
    month: Month
    spent: float = 0.0
    reserved: float = 0.0
    window: deque[list[float]] = field(default_factory=deque)
    used: float = 0.0  # tokens in the window: kept up to date, never summed per request


class Budgets:
    def __init__(self, limits: Mapping[str, Limits]) -> None:
        self._limits = {key: lim for key, lim in limits.items() if lim.any}
        self._accounts: dict[str, _Account] = {}

    @classmethod
    def from_keys(cls, keys: list[KeyConfig]) -> Budgets:
        return cls({k.name: Limits.of(k) for k in keys})

    def limits(self, key: str) -> Limits | None:
        return self._limits.get(key)

    def set_limits(self, key: str, lim: Limits) -> None:
        """Change the limits of ``key`` (its spend and rate window so far are kept)."""
        if lim.any:
            self._limits[key] = lim
        else:
            self._limits.pop(key, None)

    def load(self, spent: Mapping[str, float], now: float) -> None:
        """Start the month of ``now`` with what each key has already spent in it (from the ledger)."""
        for key in self._limits:
            self._accounts[key] = _Account(month_of(now), spent=spent.get(key, 0.0))

    def spent(self, key: str) -> float:
        account = self._accounts.get(key)
        return account.spent if account is not None else 0.0

    def reserved(self, key: str) -> float:
        account = self._accounts.get(key)
        return account.reserved if account is not None else 0.0

    def admit(
        self, key: str, usd: float, tokens: int, now: float, *, fallback_usd: float | None = None
    ) -> LocalReservation | None:
        """Reserve ``usd`` and ``tokens`` for one request of ``key``, or raise :class:`OverLimit`.

        ``fallback_usd`` is the estimate on the open tier, when the request may be downgraded there: a key
        with ``over_budget: downgrade`` that cannot afford ``usd`` then gets a reservation with
        ``downgraded=True``. Rate limits are never downgraded. ``None``: the key has no limits.
        """
        lim = self._limits.get(key)
        if lim is None:
            return None
        account = self._account(key, now)
        self._check_rate(key, lim, account, tokens, now)
        downgraded = False
        budget = lim.budget_usd_per_month
        if budget is not None and account.spent + account.reserved + usd > budget:
            if lim.over_budget != "downgrade" or fallback_usd is None:
                raise over_budget(key, budget, account.spent, account.reserved, usd, now)
            usd, downgraded = fallback_usd, True
        account.reserved += usd
        entry = [now, float(tokens), 1.0]
        account.window.append(entry)
        account.used += tokens
        return LocalReservation(key=key, month=account.month, usd=usd, window_entry=entry, downgraded=downgraded)

    def settle(self, reservation: Reservation | None, usd: float, tokens: int) -> None:
        """Replace a reservation with what the request really cost (0 for a failed request). Idempotent; a
        reservation of another book (or ``None``) is left alone."""
        if not isinstance(reservation, LocalReservation) or reservation.settled:
            return
        reservation.settled = True
        account = self._accounts.get(reservation.key)
        if account is None:
            return
        if account.month == reservation.month:
            account.reserved = max(0.0, account.reserved - reservation.usd)
        account.spent += usd
        entry = reservation.window_entry
        if entry[2]:  # still in the window: its estimate gives way to the real figure
            account.used += tokens - entry[1]
        entry[1] = float(tokens)

    def affordable(self, key: str, usd: float, now: float) -> bool:
        """Would ``usd`` more fit in ``key``'s monthly budget (spent and reserved counted)? Touches nothing."""
        lim = self._limits.get(key)
        if lim is None or lim.budget_usd_per_month is None:
            return True
        account = self._account(key, now)
        return account.spent + account.reserved + usd <= lim.budget_usd_per_month

    def charge(self, key: str, usd: float, now: float) -> None:
        """Spend ``usd`` on ``key`` outside any request (the router's shadow answers and judging): the budget
        counts it, the rate limits do not."""
        if key in self._limits:
            self._account(key, now).spent += usd

    def _account(self, key: str, now: float) -> _Account:
        month = month_of(now)
        account = self._accounts.get(key)
        if account is None or account.month < month:
            window, used = (account.window, account.used) if account is not None else (deque(), 0.0)
            account = self._accounts[key] = _Account(month, window=window, used=used)
        while account.window and account.window[0][0] <= now - WINDOW_S:
            gone = account.window.popleft()
            account.used -= gone[1]
            gone[2] = 0.0
        return account

    @staticmethod
    def _check_rate(key: str, lim: Limits, account: _Account, tokens: int, now: float) -> None:
        window = account.window
        retry = round(window[0][0] + WINDOW_S - now, 1) if window else None
        refusal = over_rate(key, lim, tokens, requests=len(window), used=max(0.0, account.used), retry=retry)
        if refusal is not None:
            raise refusal
