"""Account one batch item: its ledger row, built by the pipeline's one row builder (:func:`ledger_row`).

A batch run's rows carry its id in ``batch`` and are priced as offline work: the reference ("all-closed")
cost is the reference model at the Message Batches price, the like-for-like alternative; an item sent through
Message Batches costs the batch price (the price table's ``batch_discount``, 50%); an open-weight item costs
its backend's amortised GPU time as live (:class:`~tiergate.accounting.cost.CostModel`).

    books = BatchBooks.build(config, pool, run="tgb-1a2b3c4d5e6f")
    row = books.row("tgb-1a2b3c4d5e6f-7", Dialect.OPENAI, "auto", tier="closed", backend="claude",
                    route="router:0.8>=0.6;message-batch:msgbatch_01...", status="ok", elapsed_s=3600.0,
                    usage=Usage(input_tokens=900, output_tokens=120), message_batch=True)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tiergate.accounting.budgets import Budgets
from tiergate.accounting.cost import Cost, CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.metrics import Metrics
from tiergate.accounting.prices import load_price_table
from tiergate.accounting.schema import LedgerRow, Status
from tiergate.batch.route import BATCH_CALLER
from tiergate.config import Config
from tiergate.dispatch.pool import Pool
from tiergate.pipeline.account import Account, ledger_row
from tiergate.pipeline.gateway import Caller
from tiergate.types import JSON, Dialect, Usage

__all__ = ["BatchBooks", "row_from_json", "row_to_json"]


@dataclass(slots=True)
class BatchBooks:
    """What accounting needs for a batch run (it satisfies :class:`tiergate.pipeline.account.Books`; budgets and
    metrics are the live gateway's business and stay untouched)."""

    pool: Pool
    costs: CostModel
    ledger: Ledger
    run: str
    caller: Caller = BATCH_CALLER
    budgets: Budgets = field(default_factory=lambda: Budgets.from_keys([]))
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def build(cls, config: Config, pool: Pool, run: str, caller: Caller = BATCH_CALLER) -> BatchBooks:
        """The costs as the gateway prices them (the same price table and overrides as ``tiergate serve``)."""
        overrides = {b.model: b.price for b in config.backends if b.model and b.price}
        costs = CostModel(config, load_price_table(overrides))
        return cls(pool, costs, Ledger(config.ledger.url), run, caller)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.get_running_loop().create_task(work)

    def row(
        self,
        request_id: str,
        dialect: Dialect,
        model: str,
        *,
        tier: str | None,
        backend: str | None,
        route: str,
        status: Status,
        elapsed_s: float,
        usage: Usage | None = None,
        message_batch: bool = False,
        http_status: int = 200,
        failovers: int = 0,
    ) -> LedgerRow:
        """The ledger row of one item (``usage`` ``None``: nothing was served, nothing billed)."""
        cost: Cost | None = None
        state = self.pool.get(backend) if backend else None
        if usage is not None and state is not None:
            cost = self.costs.charge(state.config, usage, batch=message_batch, offline=True)
        account = Account(self, dialect, request_id, 0.0, self.caller.name, model)
        return ledger_row(
            account,
            tier=tier,
            backend=backend,
            route=route,
            status=status,
            elapsed=elapsed_s,
            http_status=http_status,
            usage=usage,
            cost=cost,
            failovers=failovers,
            batch=self.run,
        )


def row_to_json(row: LedgerRow) -> JSON:
    """A ledger row as the state file keeps it until the ledger has it (every field is a plain value)."""
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    values["ts"] = row.ts.isoformat()
    return values


def row_from_json(values: JSON) -> JSON:
    """The column values of a kept row, for an INSERT."""
    return {**values, "ts": datetime.fromisoformat(values["ts"])}
