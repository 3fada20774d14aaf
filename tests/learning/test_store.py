"""The learning tables on SQLite and PostgreSQL: revision 0003 matches the code's tables, rows round-trip, and
the learning spend per key (the budgets' start-up figure) is summed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import inspect

from tests.support.databases import fresh_postgres_database, postgres_base_url
from tiergate.accounting.database import connect, migrate
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.schema import LedgerRow
from tiergate.learning.shadow import FEATURES_VERSION
from tiergate.learning.store import Outcome, Sample, Store, outcomes_table, samples_table

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    async with fresh_postgres_database(postgres_base_url()) as got:
        yield got


def sample(n: int, key: str = "team") -> Sample:
    rng = np.random.default_rng(n)
    vector = rng.normal(size=384).astype(np.float32)
    return Sample(
        request_id=f"r{n}",
        key_name=key,
        route="router:0.40<0.61",
        served_tier="open",
        served_backend="vllm",
        shadow_tier="closed",
        shadow_backend="claude",
        route_score=0.4,
        ood_distance=0.52,
        sample_prob=0.25,
        encoder="enc",
        vector=vector / np.linalg.norm(vector),
        features=rng.normal(size=23).astype(np.float32),
        features_version=FEATURES_VERSION,
        rules_score=0.1,
        prompt_sha256="0" * 64,
        shadow_cost_usd=0.002,
        judge_cost_usd=0.01,
        ts=T0 + timedelta(minutes=n),
    )


async def test_the_migration_matches_the_tables_the_code_uses(url: str) -> None:
    ledger = Ledger(url)
    await ledger.start()
    async with ledger.engine.connect() as conn:
        for table in (samples_table, outcomes_table):

            def columns(sync: Any, name: str = table.name) -> list[str]:
                return [col["name"] for col in inspect(sync).get_columns(name)]

            assert await conn.run_sync(columns) == [c.name for c in table.columns]
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("route_outcomes")})
    await ledger.close()
    assert indexes == {"ix_route_outcomes_request_id"}


async def test_a_ledger_of_revision_0002_gets_the_learning_tables(url: str) -> None:
    engine = connect(url)
    await migrate(engine, "0002")
    async with engine.connect() as conn:
        before = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await migrate(engine)
    async with engine.connect() as conn:
        after = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert "route_samples" not in before
    assert {"route_samples", "route_outcomes"} <= after


async def test_rows_round_trip_and_learning_spend_is_summed_per_key(url: str) -> None:
    ledger = Ledger(url)
    await ledger.start()
    try:
        store = Store(ledger.engine)
        first, second, third = sample(1), sample(2), sample(3, key="other")
        outcome = Outcome("r1", "team", "closed", 1.0, "judge", "claude@rubric-v1", "ab=B;ba=A", T0)
        await store.record(first, [outcome, Outcome("r1", "team", "open", 0.0, "judge", "claude@rubric-v1")])
        await store.record(second)
        await store.record(third)
        got = await store.samples()
        assert [s.request_id for s in got] == ["r1", "r2", "r3"]
        np.testing.assert_allclose(got[0].vector, first.vector, atol=1e-3)  # stored as float16
        np.testing.assert_array_equal(got[0].features, first.features)
        assert (got[0].ts, got[0].sample_prob, got[0].ood_distance) == (first.ts, 0.25, 0.52)
        assert [o.tier for o in await store.outcomes(["r1"])] == ["closed", "open"]
        assert (await store.outcomes(["r1"]))[0] == outcome
        assert [s.request_id for s in await store.samples(since=T0 + timedelta(minutes=2))] == ["r2", "r3"]
        spend = await store.spend_by_key(T0)
        assert spend == pytest.approx({"team": 0.024, "other": 0.012})
        ledger.record(LedgerRow("r9", "team", "openai", "auto", "open", "vllm", "router:0.1<0.5", "ok", ts=T0))
        await ledger.flush()
        row = await store.request("r9")
        assert row is not None
        assert row.backend == "vllm"
        assert await store.request("missing") is None
        assert await store.counts() == {"samples:judged": 3, "outcomes:judge": 2}
    finally:
        await ledger.close()
