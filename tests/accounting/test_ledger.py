"""The ledger on SQLite and PostgreSQL: migrations, batched writes, flush on close, reads, spend per key."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, inspect, text

from tiergate.accounting.database import connect, has_ledger, migrate
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.schema import AttemptRow, LedgerRow, metadata, requests
from tiergate.errors import ConfigError

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make_row(n: int = 0, **kw: object) -> LedgerRow:
    fields: dict[str, object] = {
        "request_id": f"req-{n}",
        "key_name": "team",
        "dialect": "anthropic",
        "model": "auto",
        "tier": "closed",
        "backend": "claude",
        "route": "router:0.9>0.4;failover:vllm-down",
        "status": "ok",
        "ts": T0 + timedelta(seconds=n),
    }
    fields.update(kw)
    return LedgerRow(**fields)  # type: ignore[arg-type]


# The table as revision 0001 left it: every column but the two that 0002 adds and the one 0003 adds.
requests_0001 = Table(
    "requests",
    MetaData(),
    *(Column(c.name, c.type) for c in requests.columns if c.name not in {"id", "marginal_usd", "utilisation", "batch"}),
)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(ledger_url, flush_interval=0.05)
    await ledger.start()
    yield ledger
    await ledger.close()


async def test_start_creates_the_schema_and_is_idempotent(ledger_url: str) -> None:
    for _ in range(2):
        ledger = Ledger(ledger_url)
        await ledger.start()
        async with ledger.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            version = (await conn.execute(text("select version_num from alembic_version"))).scalar_one()
        await ledger.close()
        assert {"requests", "attempts", "route_samples", "route_outcomes", "alembic_version"} <= tables
        assert version == "0005"


async def test_the_migration_matches_the_table_the_code_uses(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    await ledger.start()
    async with ledger.engine.connect() as conn:
        columns = await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("requests")])
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("requests")})
    await ledger.close()
    assert columns == [c.name for c in metadata.tables["requests"].columns]
    assert indexes == {"ix_requests_ts", "ix_requests_request_id"}
    ledger = Ledger(ledger_url)
    await ledger.start()
    async with ledger.engine.connect() as conn:
        columns = await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("attempts")])
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("attempts")})
    await ledger.close()
    assert columns == [c.name for c in metadata.tables["attempts"].columns]
    assert indexes == {"ix_attempts_request_id", "ix_attempts_ts"}


async def test_a_request_and_its_attempts_are_written_together_and_read_back_in_order(ledger: Ledger) -> None:
    row = make_row(1, failovers=1)
    tries = [
        AttemptRow("req-1", 0, "vllm", "open", "first", "failed", "HTTP 503", 503, 0.5, 12.25, 40, 0, 0.0, T0),
        AttemptRow("req-1", 1, "claude", "closed", "failover", "ok", "", None, 13.0, 800.0, 40, 12, 0.0, T0),
    ]
    ledger.record(row, tries)
    ledger.record(make_row(2))  # a request without attempts rows (as before revision 0003)
    await ledger.flush()
    assert await ledger.attempts("req-1") == tries
    assert await ledger.attempts("req-2") == []
    assert await ledger.attempts() == tries
    assert [r.request_id for r in await ledger.rows()] == ["req-1", "req-2"]


async def test_every_field_round_trips(ledger: Ledger) -> None:
    row = make_row(
        input_tokens=1200,
        output_tokens=345,
        cache_read_tokens=1000,
        cache_write_tokens=10,
        cost_usd=0.0123456789,
        counterfactual_usd=0.0234567891,
        latency_ms=812.5,
        ttft_ms=120.25,
        http_status=200,
        failovers=1,
        estimated=True,
        marginal_usd=0.00123,
        utilisation=0.375,
        batch="tgb-0123456789ab",
    )
    ledger.record(row)
    await ledger.flush()
    assert await ledger.rows() == [row]


async def test_a_ledger_of_revision_0001_is_migrated_with_its_rows(ledger_url: str) -> None:
    engine = connect(ledger_url)
    try:
        await migrate(engine, "0001")
        async with engine.begin() as conn:
            old = make_row(0).values()
            for name in ("marginal_usd", "utilisation", "batch"):
                del old[name]
            await conn.execute(requests_0001.insert(), [{**old, "cost_usd": 0.5}, {**old, "tier": "open"}])
    finally:
        await engine.dispose()
    ledger = Ledger(ledger_url)
    await ledger.start()
    rows = await ledger.rows()
    await ledger.close()
    # Closed rows written before marginal costs existed: all of their cost was marginal; the rest none.
    assert [(r.tier, r.cost_usd, r.marginal_usd, r.utilisation) for r in rows] == [
        ("closed", 0.5, 0.5, None),
        ("open", 0.0, 0.0, None),
    ]
    assert [r.batch for r in rows] == [None, None]  # 0003: rows from before batch work are live traffic


async def test_error_rows_keep_their_nulls(ledger: Ledger) -> None:
    row = make_row(tier=None, backend=None, route="", status="error", http_status=400, model="")
    ledger.record(row)
    await ledger.flush()
    (back,) = await ledger.rows()
    assert (back.tier, back.backend, back.ttft_ms, back.status, back.http_status) == (None, None, None, "error", 400)


async def test_the_writer_flushes_on_its_own(ledger: Ledger) -> None:
    for n in range(3):
        ledger.record(make_row(n))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not ledger.pending and len(await ledger.rows()) == 3:
            break
    assert [r.request_id for r in await ledger.rows()] == ["req-0", "req-1", "req-2"]


async def test_a_full_batch_is_written_at_once(ledger_url: str) -> None:
    ledger = Ledger(ledger_url, flush_interval=60, batch_size=5)
    await ledger.start()
    try:
        for n in range(5):
            ledger.record(make_row(n))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not ledger.pending:
                break
        assert len(await ledger.rows()) == 5
    finally:
        await ledger.close()


async def test_close_writes_what_is_left(ledger_url: str) -> None:
    ledger = Ledger(ledger_url, flush_interval=60)
    await ledger.start()
    for n in range(250):
        ledger.record(make_row(n))
    await ledger.close()
    reader = Ledger(ledger_url)
    await reader.start(writer=False)
    assert len(await reader.rows()) == 250
    await reader.close()


async def test_a_failed_write_keeps_the_rows_for_the_next_try(ledger: Ledger) -> None:
    async with ledger.engine.begin() as conn:
        await conn.execute(text("drop table requests"))
    ledger.record(make_row(1))
    with pytest.raises(Exception, match="requests"):
        await ledger.flush()
    assert len(ledger.pending) == 1
    async with ledger.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await ledger.flush()
    assert [r.request_id for r in await ledger.rows()] == ["req-1"]


async def test_rows_in_a_window(ledger: Ledger) -> None:
    for n in range(10):
        ledger.record(make_row(n))
    await ledger.flush()
    got = await ledger.rows(since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=6))
    assert [r.request_id for r in got] == ["req-3", "req-4", "req-5"]
    assert all(r.ts.tzinfo is not None for r in got)


async def test_spend_by_key_since_the_start_of_the_month(ledger: Ledger) -> None:
    ledger.record(make_row(0, key_name="a", cost_usd=0.5, ts=T0 - timedelta(days=1)))  # last month
    ledger.record(make_row(1, key_name="a", cost_usd=0.25))
    ledger.record(make_row(2, key_name="a", cost_usd=0.125))
    ledger.record(make_row(3, key_name="b", cost_usd=1.0))
    await ledger.flush()
    assert await ledger.spend_by_key(T0) == {"a": pytest.approx(0.375), "b": pytest.approx(1.0)}


async def test_a_reader_never_creates_a_ledger(ledger_url: str, tmp_path: Path) -> None:
    if ledger_url.startswith("sqlite"):
        missing = tmp_path / "nothing.db"
        with pytest.raises(ConfigError, match=r"no ledger at .*nothing\.db: run 'tiergate serve' first"):
            await Ledger(f"sqlite:///{missing}").start(writer=False)
        assert not missing.exists()
        return
    with pytest.raises(ConfigError, match="no ledger in postgresql\\+asyncpg://"):
        await Ledger(ledger_url).start(writer=False)
    engine = connect(ledger_url)
    assert not await has_ledger(engine)
    await engine.dispose()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    ledger = Ledger(f"sqlite:///{path}")
    await ledger.start()
    ledger.record(make_row())
    await ledger.flush()
    with sqlite3.connect(path) as conn:
        mode = conn.execute("pragma journal_mode").fetchone()[0]
        count = conn.execute("select count(*) from requests").fetchone()[0]
    await ledger.close()
    assert (mode, count) == ("wal", 1)


async def test_in_memory_sqlite_keeps_one_database() -> None:
    ledger = Ledger("sqlite:///:memory:")
    await ledger.start()
    ledger.record(make_row())
    await ledger.flush()
    assert len(await ledger.rows()) == 1
    await ledger.close()


def test_a_wrong_url_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        Ledger("mysql://db/ledger")
