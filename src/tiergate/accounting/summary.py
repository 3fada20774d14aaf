"""The figures of ``tiergate report`` and ``/dashboard``, from ledger rows: one pure function, :func:`summarise`.

>>> from tiergate.accounting.schema import LedgerRow
>>> rows = [LedgerRow("a", "k", "openai", "auto", "open", "vllm", "router:0.1<0.4", "ok",
...                   cost_usd=0.001, counterfactual_usd=0.010, latency_ms=80.0),
...         LedgerRow("b", "k", "openai", "auto", "closed", "claude", "router:0.9>0.4", "ok",
...                   cost_usd=0.010, counterfactual_usd=0.010, latency_ms=900.0)]
>>> s = summarise(rows)
>>> (s.requests, round(s.saving_usd, 3), round(s.saving_pct, 1))
(2, 0.009, 45.0)
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tiergate.accounting.schema import STATUSES, LedgerRow

__all__ = [
    "BackendFigures",
    "KeyFigures",
    "Share",
    "Summary",
    "TierFigures",
    "WorkFigures",
    "parse_since",
    "percentile",
    "reason_label",
    "summarise",
]

SOVEREIGN = "policy:sovereign"
GUARD = "guard:"
#: The hazard category in a guard reason: ``guard:0.93>=0.45:violent_crimes`` (``...:allow`` when let through).
_GUARD_CATEGORY = re.compile(r"guard:[0-9.]+>=[0-9.]+:([a-z_]+)")
DOWNGRADE = "budget:downgrade"
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_WINDOW = re.compile(r"^(\d+)([mhdw])$")


@dataclass(frozen=True, slots=True)
class TierFigures:
    tier: str
    requests: int
    share: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    counterfactual_usd: float
    p50_ms: float | None
    p95_ms: float | None
    ttft_p50_ms: float | None
    marginal_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Share:
    label: str
    requests: int
    share: float


@dataclass(frozen=True, slots=True)
class BackendFigures:
    """One backend. ``utilisation``: the mean of the busy shares measured as its requests ended (open
    backends with a ``cost`` section; ``None`` elsewhere)."""

    backend: str
    tier: str
    requests: int
    output_tokens: int
    cost_usd: float
    marginal_usd: float
    utilisation: float | None


@dataclass(frozen=True, slots=True)
class KeyFigures:
    key: str
    requests: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class WorkFigures:
    """Live traffic or batch work (``tiergate batch`` runs), apart. ``all_closed_usd``: the reference model for
    the same tokens, at the live price for live traffic and at the Message Batches price for batch work (the
    like-for-like alternative)."""

    kind: str
    requests: int
    open: int
    closed: int
    cost_usd: float
    all_closed_usd: float
    saving_usd: float
    saving_pct: float | None
    runs: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    """Every figure is over the rows given; ``share`` values are fractions of the served requests.

    ``cost_usd`` counts open backends at their amortised cost; ``marginal_usd`` is what the traffic added to
    the bill (closed tokens, plus open tokens beyond idle capacity)."""

    since: datetime | None
    until: datetime | None
    requests: int
    served: int
    statuses: dict[str, int]
    cost_usd: float
    marginal_usd: float
    all_closed_usd: float
    saving_usd: float
    saving_pct: float | None
    failovers: int
    failover_attempts: int
    sovereign: int
    guarded: int
    downgraded: int
    estimated: int
    tiers: list[TierFigures] = field(default_factory=list)
    reasons: list[Share] = field(default_factory=list)
    keys: list[KeyFigures] = field(default_factory=list)
    backends: list[BackendFigures] = field(default_factory=list)
    #: Live traffic and batch work apart (one entry each where the window has any).
    work: list[WorkFigures] = field(default_factory=list)
    #: Guard flags by hazard category (``tiergate.guard.categories``), most frequent first.
    guard_categories: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("since", "until"):
            value = getattr(self, name)
            data[name] = None if value is None else value.isoformat()
        return data


def parse_since(text: str, now: datetime | None = None) -> datetime | None:
    """``7d``, ``12h``, ``30m``, ``2w`` before ``now``; an ISO date or time; or ``all`` (``None``)."""
    now = now or datetime.now(UTC)
    text = text.strip().lower()
    if text == "all":
        return None
    match = _WINDOW.match(text)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: use a duration such as 7d, 12h, 30m or 2w, a date, or 'all'") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolated between closest ranks; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def reason_label(route: str) -> str:
    """The traffic-mix label of a route: its first reason, without scores or the key's tier.

    >>> reason_label("router:0.27<0.41;failover:closed-down"), reason_label("key:hr-app:open")
    ('router', 'key:hr-app')
    >>> reason_label("ood:0.81>0.77->rules:0.93>0.56")
    'ood'
    """
    first = route.split(";", 1)[0]
    if not first:
        return "none"
    head = first.split(":")
    return head[0] if head[0] in ("router", "ood") else ":".join(head[:2])


def summarise(rows: Iterable[LedgerRow], since: datetime | None = None, until: datetime | None = None) -> Summary:
    statuses: Counter[str] = Counter({s: 0 for s in STATUSES})
    reasons: Counter[str] = Counter()
    by_tier: dict[str, list[LedgerRow]] = defaultdict(list)
    by_key: dict[str, list[LedgerRow]] = defaultdict(list)
    by_backend: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    by_work: dict[str, list[LedgerRow]] = defaultdict(list)
    categories: Counter[str] = Counter()
    cost = counterfactual = marginal = 0.0
    count = failovers = attempts = sovereign = guarded = downgraded = estimated = 0
    for row in rows:
        count += 1
        statuses[row.status] += 1
        cost += row.cost_usd
        counterfactual += row.counterfactual_usd
        marginal += row.marginal_usd
        by_key[row.key_name or "unauthenticated"].append(row)
        failovers += row.failovers > 0
        attempts += row.failovers
        sovereign += SOVEREIGN in row.route
        guarded += GUARD in row.route
        if (found := _GUARD_CATEGORY.search(row.route)) is not None:
            categories[found.group(1)] += 1
        downgraded += DOWNGRADE in row.route
        estimated += row.estimated
        by_work["live" if row.batch is None else "batch"].append(row)
        if row.tier is not None:
            by_tier[row.tier].append(row)
            reasons[reason_label(row.route)] += 1
            if row.backend is not None:
                by_backend[(row.backend, row.tier)].append(row)
    served = sum(len(r) for r in by_tier.values())
    saving = counterfactual - cost
    return Summary(
        since=since,
        until=until,
        requests=count,
        served=served,
        statuses=dict(statuses),
        cost_usd=cost,
        marginal_usd=marginal,
        all_closed_usd=counterfactual,
        saving_usd=saving,
        saving_pct=100 * saving / counterfactual if counterfactual > 0 else None,
        failovers=failovers,
        failover_attempts=attempts,
        sovereign=sovereign,
        guarded=guarded,
        downgraded=downgraded,
        estimated=estimated,
        tiers=[_tier(tier, rs, served) for tier, rs in sorted(by_tier.items())],
        reasons=[Share(label, n, n / served) for label, n in reasons.most_common()],
        keys=[KeyFigures(k, len(rs), sum(r.cost_usd for r in rs)) for k, rs in sorted(by_key.items())],
        backends=[_backend(name, tier, rs) for (name, tier), rs in sorted(by_backend.items())],
        work=[_work(kind, by_work[kind]) for kind in ("live", "batch") if by_work[kind]],
        guard_categories=dict(categories.most_common()),
    )


def _work(kind: str, rows: list[LedgerRow]) -> WorkFigures:
    cost = sum(r.cost_usd for r in rows)
    reference = sum(r.counterfactual_usd for r in rows)
    return WorkFigures(
        kind=kind,
        requests=len(rows),
        open=sum(r.tier == "open" for r in rows),
        closed=sum(r.tier == "closed" for r in rows),
        cost_usd=cost,
        all_closed_usd=reference,
        saving_usd=reference - cost,
        saving_pct=100 * (reference - cost) / reference if reference > 0 else None,
        runs=len({r.batch for r in rows if r.batch is not None}),
    )


def _backend(name: str, tier: str, rows: list[LedgerRow]) -> BackendFigures:
    measured = [r.utilisation for r in rows if r.utilisation is not None]
    return BackendFigures(
        backend=name,
        tier=tier,
        requests=len(rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        marginal_usd=sum(r.marginal_usd for r in rows),
        utilisation=sum(measured) / len(measured) if measured else None,
    )


def _tier(tier: str, rows: list[LedgerRow], served: int) -> TierFigures:
    ok = [r for r in rows if r.status == "ok" and r.batch is None]  # latency: live traffic (a batch waits hours)
    latencies = [r.latency_ms for r in ok]
    ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    return TierFigures(
        tier=tier,
        requests=len(rows),
        share=len(rows) / served,
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        counterfactual_usd=sum(r.counterfactual_usd for r in rows),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        ttft_p50_ms=percentile(ttfts, 50),
        marginal_usd=sum(r.marginal_usd for r in rows),
    )
