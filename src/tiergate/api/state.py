"""Everything a request needs, built once by the app's lifespan and handed to handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tiergate.accounting.cost import CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.metrics import Metrics
from tiergate.api.auth import KeyRing
from tiergate.config import Config
from tiergate.dispatch.pool import Pool
from tiergate.learning.shadow import Learning
from tiergate.limits import Limiter
from tiergate.offload import Parsers
from tiergate.pipeline.admit import Admission
from tiergate.pipeline.gateway import Gateway
from tiergate.routing.reload import Reloader
from tiergate.tracing import Tracing


@dataclass(slots=True)
class AppState:
    config: Config
    pool: Pool
    gateway: Gateway
    keys: KeyRing
    metrics: Metrics
    costs: CostModel
    ledger: Ledger
    budgets: Limiter  # budgets and rate limits: in this process, or shared in Redis
    admission: Admission
    ready: bool = False
    tracing: Tracing = field(default_factory=Tracing.disabled)
    #: Work a request left behind (the accounting of a cut stream): awaited at shutdown, before the ledger closes.
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    #: The router's learning loop (shadow pairs) and its artifact reloads (issue 14).
    learning: Learning | None = None
    reloader: Reloader | None = None
    #: Where bodies are decoded and validated: large ones off the loop, in a thread one at a time, the largest in a
    #: worker process (``limits.parse_workers``): ``json.loads`` and pydantic hold the GIL in C (offload.py).
    parsers: Parsers = field(default_factory=Parsers)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def drain(self, timeout_s: float = 10.0) -> None:
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout_s)
