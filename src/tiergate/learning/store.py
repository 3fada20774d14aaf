"""The learning tables of the ledger (revision 0003): what the router saw of a shadowed request, and outcomes.

``route_samples``: one row per shadowed request. The prompt itself is not kept (its SHA-256 is): the trainer
needs only what the router read, the sentence vector (float16) and the features, with the rules router's score
for the fallback and how likely the request was to be shadowed (``sample_prob``: training weights rows by its
inverse). ``status``: ``judged``, ``shadow-failed``, ``judge-failed`` or ``judge-unclear``; ``shadow_cost_usd``
and ``judge_cost_usd`` are what learning cost, charged to the caller's key.

``route_outcomes``: one row per tier and source: ``judge`` (the judge's verdicts in both orders, averaged: 1 a
win, 0.5 a tie, 0 a loss) or ``feedback`` (``POST /v1/feedback``: the application's own score of the answer it
got). ``detail`` says how (``ab=A;ba=C``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.accounting.schema import LedgerRow, requests

__all__ = ["Outcome", "Sample", "Store", "outcomes_table", "samples_table"]

metadata = MetaData()

samples_table = Table(
    "route_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("key_name", String(200), nullable=False),
    Column("route", String(1000), nullable=False),
    Column("served_tier", String(16), nullable=False),
    Column("served_backend", String(200), nullable=True),
    Column("shadow_tier", String(16), nullable=False),
    Column("shadow_backend", String(200), nullable=True),
    Column("route_score", Float, nullable=True),
    Column("ood_distance", Float, nullable=True),
    Column("sample_prob", Float, nullable=False),
    Column("encoder", String(200), nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("features", LargeBinary, nullable=False),
    Column("features_version", String(64), nullable=False),
    Column("rules_score", Float, nullable=False),
    Column("prompt_sha256", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("shadow_cost_usd", Float, nullable=False),
    Column("judge_cost_usd", Float, nullable=False),
)

outcomes_table = Table(
    "route_outcomes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("key_name", String(200), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("source", String(16), nullable=False),
    Column("judge", String(200), nullable=False),
    Column("detail", String(200), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(slots=True)
class Sample:
    """One shadowed request, as ``route_samples`` stores it."""

    request_id: str
    key_name: str
    route: str
    served_tier: str
    served_backend: str | None
    shadow_tier: str
    shadow_backend: str | None
    route_score: float | None
    ood_distance: float | None
    sample_prob: float
    encoder: str
    vector: npt.NDArray[np.float32]
    features: npt.NDArray[np.float32]
    features_version: str
    rules_score: float
    prompt_sha256: str
    status: str = "judged"
    shadow_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    ts: datetime = field(default_factory=_now)

    def values(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "request_id": self.request_id,
            "key_name": self.key_name,
            "route": self.route[:1000],
            "served_tier": self.served_tier,
            "served_backend": self.served_backend,
            "shadow_tier": self.shadow_tier,
            "shadow_backend": self.shadow_backend,
            "route_score": self.route_score,
            "ood_distance": self.ood_distance,
            "sample_prob": self.sample_prob,
            "encoder": self.encoder,
            "vector": np.asarray(self.vector, dtype=np.float16).tobytes(),
            "features": np.asarray(self.features, dtype=np.float32).tobytes(),
            "features_version": self.features_version,
            "rules_score": self.rules_score,
            "prompt_sha256": self.prompt_sha256,
            "status": self.status,
            "shadow_cost_usd": self.shadow_cost_usd,
            "judge_cost_usd": self.judge_cost_usd,
        }

    @classmethod
    def from_mapping(cls, row: Any) -> Sample:
        values = {k: row[k] for k in cls.__dataclass_fields__}
        values["vector"] = np.frombuffer(row["vector"], dtype=np.float16).astype(np.float32)
        values["features"] = np.frombuffer(row["features"], dtype=np.float32).copy()
        values["ts"] = _utc(row["ts"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One tier's outcome on one request (``source``: ``judge`` or ``feedback``)."""

    request_id: str
    key_name: str
    tier: str
    score: float
    source: str
    judge: str
    detail: str = ""
    ts: datetime = field(default_factory=_now)

    def values(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "request_id": self.request_id,
            "key_name": self.key_name,
            "tier": self.tier,
            "score": self.score,
            "source": self.source,
            "judge": self.judge[:200],
            "detail": self.detail[:200],
        }

    @classmethod
    def from_mapping(cls, row: Any) -> Outcome:
        values = {k: row[k] for k in cls.__dataclass_fields__}
        values["ts"] = _utc(row["ts"])
        return cls(**values)


class Store:
    """Reads and writes the learning tables on the ledger's engine (migrated by :class:`Ledger.start`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def record(self, sample: Sample | None, outcomes: Sequence[Outcome] = ()) -> None:
        """One sample and its outcomes, in one transaction."""
        async with self.engine.begin() as conn:
            if sample is not None:
                await conn.execute(samples_table.insert(), [sample.values()])
            if outcomes:
                await conn.execute(outcomes_table.insert(), [o.values() for o in outcomes])

    async def samples(self, since: datetime | None = None, until: datetime | None = None) -> list[Sample]:
        """Every sample in ``[since, until)``, oldest first."""
        query = select(samples_table).order_by(samples_table.c.ts, samples_table.c.id)
        if since is not None:
            query = query.where(samples_table.c.ts >= since)
        if until is not None:
            query = query.where(samples_table.c.ts < until)
        async with self.engine.connect() as conn:
            return [Sample.from_mapping(r) for r in (await conn.execute(query)).mappings()]

    async def outcomes(self, request_ids: Sequence[str] | None = None) -> list[Outcome]:
        """The outcomes of ``request_ids`` (every outcome when ``None``), oldest first."""
        query = select(outcomes_table).order_by(outcomes_table.c.ts, outcomes_table.c.id)
        if request_ids is not None:
            query = query.where(outcomes_table.c.request_id.in_(list(request_ids)))
        async with self.engine.connect() as conn:
            return [Outcome.from_mapping(r) for r in (await conn.execute(query)).mappings()]

    async def request(self, request_id: str) -> LedgerRow | None:
        """The ledger row of a served request (the last, should a request id repeat)."""
        query = select(requests).where(requests.c.request_id == request_id).order_by(requests.c.id.desc()).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else LedgerRow.from_mapping(row)

    async def spend_by_key(self, since: datetime) -> dict[str, float]:
        """What learning (shadow answers and judging) cost, per key, since ``since``."""
        total = func.sum(samples_table.c.shadow_cost_usd + samples_table.c.judge_cost_usd)
        query = select(samples_table.c.key_name, total).where(samples_table.c.ts >= since)
        async with self.engine.connect() as conn:
            result = await conn.execute(query.group_by(samples_table.c.key_name))
            return {str(name): float(value or 0.0) for name, value in result.all()}

    async def counts(self, since: datetime | None = None) -> dict[str, int]:
        """Samples by status, and outcomes by source, since ``since``."""
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            q = select(samples_table.c.status, func.count()).group_by(samples_table.c.status)
            if since is not None:
                q = q.where(samples_table.c.ts >= since)
            out.update({f"samples:{s}": int(n) for s, n in (await conn.execute(q)).all()})
            q2 = select(outcomes_table.c.source, func.count()).group_by(outcomes_table.c.source)
            if since is not None:
                q2 = q2.where(outcomes_table.c.ts >= since)
            out.update({f"outcomes:{s}": int(n) for s, n in (await conn.execute(q2)).all()})
        return out
