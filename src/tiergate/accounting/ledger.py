"""The ledger: one row per request, written off the hot path.

Handlers call :meth:`Ledger.record`, which only appends to an in-memory queue. A writer task flushes the
queue every ``flush_interval`` seconds (0.5 by default) or as soon as ``batch_size`` rows wait, each batch
in one transaction. :meth:`Ledger.close` (the app's lifespan shutdown) flushes what is left, so a graceful
shutdown loses nothing; a killed process loses at most the rows of the last interval.

    ledger = Ledger("sqlite:///tiergate.db")
    await ledger.start()                    # connects and migrates the schema
    ledger.record(LedgerRow(...), tries)    # never blocks, never raises; ``tries``: its AttemptRows
    rows = await ledger.rows(since=yesterday)
    path = await ledger.attempts(request_id)
    await ledger.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.accounting.database import async_url, connect, describe, has_ledger, migrate, sqlite_path
from tiergate.accounting.schema import AttemptRow, LedgerRow, attempts, requests
from tiergate.errors import ConfigError

__all__ = ["Ledger"]

log = logging.getLogger("tiergate.ledger")


class Ledger:
    def __init__(
        self, url: str, *, flush_interval: float = 0.5, batch_size: int = 500, max_pending: int = 100_000
    ) -> None:
        async_url(url)  # a wrong URL fails at start-up, with the fix in the message
        self.url = url
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._engine: AsyncEngine | None = None
        self._pending: list[tuple[LedgerRow, Sequence[AttemptRow]]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the ledger is not started")
        return self._engine

    async def start(self, *, writer: bool = True) -> None:
        """Connect, migrate the schema and start the writer task.

        A reader (``writer=False``: ``tiergate report``) neither migrates nor creates anything: where there is
        no ledger yet it raises :class:`ConfigError`.
        """
        if not writer:
            path = sqlite_path(self.url)
            if path is not None and not path.is_file():
                raise ConfigError(f"no ledger at {path}: run 'tiergate serve' first, or pass --db / --config")
        self._engine = connect(self.url)
        if not writer:
            if not await has_ledger(self._engine):
                await self.close()
                raise ConfigError(f"no ledger in {describe(self.url)}: run 'tiergate serve' against it first")
            return
        await migrate(self._engine)
        self._writer = asyncio.create_task(self._write_forever(), name="tiergate-ledger-writer")
        log.info("ledger: %s", describe(self.url))

    def record(self, row: LedgerRow, tries: Sequence[AttemptRow] = ()) -> None:
        """Queue one row and its attempts (written in the same transaction). Beyond ``max_pending`` unwritten rows
        (the database is down) the oldest are dropped."""
        self._pending.append((row, tries))
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            del self._pending[:excess]
            self.dropped += excess
            log.error("ledger: database unreachable, dropped %d rows (%d so far)", excess, self.dropped)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write every queued row now, in one transaction; on failure the rows stay queued."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(requests.insert(), [row.values() for row, _ in batch])
                    tried = [t.values() for _, tries in batch for t in tries]
                    if tried:
                        await conn.execute(attempts.insert(), tried)
            except BaseException:
                self._pending[:0] = batch
                raise

    async def close(self) -> None:
        """Stop the writer, flush what is left and release the connections."""
        if self._writer is not None:  # let it finish its batch: cancelling mid-commit could write rows twice
            self._closing = True
            self._wake.set()
            await self._writer
            self._writer = None
        if self._engine is None:
            return
        try:
            await self.flush()
        except Exception:
            log.exception("ledger: could not write the last %d rows", len(self._pending))
        await self._engine.dispose()
        self._engine = None

    async def rows(self, since: datetime | None = None, until: datetime | None = None) -> list[LedgerRow]:
        """Every row in ``[since, until)``, oldest first."""
        query = select(requests).order_by(requests.c.ts, requests.c.id)
        if since is not None:
            query = query.where(requests.c.ts >= since)
        if until is not None:
            query = query.where(requests.c.ts < until)
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return [LedgerRow.from_mapping(r) for r in result.mappings()]

    async def attempts(self, request_id: str | None = None) -> list[AttemptRow]:
        """The tries of one request in order (``request_id``), or of every request."""
        query = select(attempts).order_by(attempts.c.ts, attempts.c.request_id, attempts.c.seq)
        if request_id is not None:
            query = select(attempts).where(attempts.c.request_id == request_id).order_by(attempts.c.seq)
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return [AttemptRow.from_mapping(r) for r in result.mappings()]

    async def spend_by_key(self, since: datetime) -> dict[str, float]:
        """USD spent per key name since ``since`` (the start of the budget month)."""
        query = (
            select(requests.c.key_name, func.sum(requests.c.cost_usd))
            .where(requests.c.ts >= since)
            .group_by(requests.c.key_name)
        )
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return {str(name): float(total or 0.0) for name, total in result.all()}

    @property
    def pending(self) -> Sequence[LedgerRow]:
        return tuple(row for row, _ in self._pending)

    async def _write_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("ledger: write failed; %d rows kept for the next try", len(self._pending))
