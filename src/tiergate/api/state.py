"""Everything a request needs, built once by the app's lifespan and handed to handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tiergate.accounting.budgets import Budgets
from tiergate.accounting.cost import CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.metrics import Metrics
from tiergate.api.auth import KeyRing
from tiergate.config import Config
from tiergate.dispatch.pool import Pool
from tiergate.pipeline.admit import Admission
from tiergate.pipeline.gateway import Gateway


@dataclass(slots=True)
class AppState:
    config: Config
    pool: Pool
    gateway: Gateway
    keys: KeyRing
    metrics: Metrics
    costs: CostModel
    ledger: Ledger
    budgets: Budgets
    admission: Admission
    ready: bool = False
    #: Work a request left behind (the accounting of a cut stream): awaited at shutdown, before the ledger closes.
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    #: Large bodies are parsed off the loop one at a time: ``json.loads`` and pydantic hold the GIL in C, and two
    #: parses in two threads could hand it to each other while the loop waits for both (api/intake.py).
    parsing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def drain(self, timeout_s: float = 10.0) -> None:
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout_s)
