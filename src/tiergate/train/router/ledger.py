"""Training rows from a deployment's own traffic: the ledger's judged shadow pairs and applications' feedback.

A shadowed request (``route_samples``) becomes a row when both tiers have at least one outcome
(``route_outcomes``): a tier's quality is the mean of its outcomes (the judge's, averaged over both orders, and
any ``POST /v1/feedback`` scores), the gain is closed - open. The row keeps what the router read when it served
the request (the sentence vector, the features, the rules router's score); no prompt text is needed. Rows whose
vector came from another encoder, or whose features from another feature set, are left out (and counted). Each
row is weighted by 1 / the probability it had of being shadowed (normalised to mean 1), so a higher share for
out-of-distribution prompts does not tilt the fit toward them.

The held-out rows are the **latest** ones (a temporal split: "traffic not yet seen"); ``router train
--from-ledger`` records where it cut (``data.ledger.holdout_from``) and ``router eval --from-ledger`` scores only
the rows from there on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import inspect

from tiergate.accounting.ledger import Ledger
from tiergate.learning.shadow import FEATURES_VERSION
from tiergate.learning.store import Store
from tiergate.signals.encoder import MODEL_ID
from tiergate.train.jsonl import DataError
from tiergate.train.router.train import Outcomes

__all__ = ["LedgerData", "load_ledger", "temporal_holdout"]

#: The task of every ledger row: one "benchmark", held-out groups are hash buckets of request ids.
TASK = "ledger"


@dataclass(frozen=True, slots=True)
class LedgerData:
    """Rows ready to train or evaluate on, oldest first, with their vectors, times and per-tier costs."""

    outcomes: Outcomes
    vectors: npt.NDArray[np.float32]
    times: list[datetime]
    #: Mean cost of an answer per tier over these rows' answers (served and shadow), USD.
    tier_cost: dict[str, float]
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.outcomes)


def temporal_holdout(times: list[datetime], share: float) -> npt.NDArray[np.bool_]:
    """The latest ``share`` of the rows (at least one, when there are two or more)."""
    n = len(times)
    held = np.zeros(n, bool)
    count = min(n - 1, max(1, round(share * n))) if n >= 2 and share > 0 else 0
    if count:
        held[n - count :] = True
    return held


async def _read(url: str, since: datetime | None, until: datetime | None) -> LedgerData:
    ledger = Ledger(url)
    await ledger.start(writer=False)
    try:
        async with ledger.engine.connect() as conn:
            ready = await conn.run_sync(lambda c: inspect(c).has_table("route_samples"))
        if not ready:
            raise DataError(
                "this ledger has no shadow pairs yet (no route_samples table): serve with router.shadow.share"
            )
        store = Store(ledger.engine)
        samples = await store.samples(since, until)
        outcomes = await store.outcomes([s.request_id for s in samples]) if samples else []
        served_cost: dict[str, float] = {}
        for s in samples:
            row = await store.request(s.request_id)
            if row is not None and row.tier is not None:
                served_cost[s.request_id] = row.cost_usd
    finally:
        await ledger.close()
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for o in outcomes:
        scores[o.request_id][o.tier].append(o.score)
    skipped: dict[str, int] = defaultdict(int)
    rows: list[Any] = []
    costs: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.encoder != MODEL_ID:
            skipped["another encoder"] += 1
            continue
        if s.features_version != FEATURES_VERSION:
            skipped["other features"] += 1
            continue
        per = scores.get(s.request_id, {})
        if not per.get("open") or not per.get("closed"):
            skipped[f"not judged ({s.status})"] += 1
            continue
        rows.append((s, float(np.mean(per["open"])), float(np.mean(per["closed"]))))
        costs[s.shadow_tier].append(s.shadow_cost_usd)
        if s.request_id in served_cost:
            costs[s.served_tier].append(served_cost[s.request_id])
    if not rows:
        raise DataError(
            f"no judged shadow pairs in the ledger{'' if since is None else ' in that window'} "
            f"({', '.join(f'{k}: {v}' for k, v in skipped.items()) or 'no samples'})"
        )
    probs = np.array([r[0].sample_prob for r in rows], dtype=np.float64)
    weights = 1.0 / np.clip(probs, 1e-6, None)
    data = Outcomes(
        ids=[r[0].request_id for r in rows],
        tasks=[TASK] * len(rows),
        prompts=[],
        weak=np.array([r[1] for r in rows]),
        strong=np.array([r[2] for r in rows]),
        weak_model="open",
        strong_model="closed",
        files=[],
        features=np.stack([r[0].features for r in rows]).astype(np.float32),
        rules=np.array([r[0].rules_score for r in rows], dtype=np.float64),
        weights=weights / weights.mean(),
    )
    return LedgerData(
        outcomes=data,
        vectors=np.stack([r[0].vector for r in rows]).astype(np.float32),
        times=[r[0].ts for r in rows],
        tier_cost={tier: float(np.mean(v)) for tier, v in costs.items() if v},
        skipped=dict(skipped),
    )


def load_ledger(url: str, since: datetime | None = None, until: datetime | None = None) -> LedgerData:
    """The judged shadow pairs of the ledger at ``url`` in ``[since, until)``; :class:`DataError` if none."""
    return asyncio.run(_read(url, since, until))
