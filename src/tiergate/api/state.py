"""Everything a request needs, built once by the app's lifespan and handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.accounting.budgets import Budgets
from tiergate.accounting.cost import CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.api.auth import KeyRing
from tiergate.api.metrics import Metrics
from tiergate.backends.pool import Pool
from tiergate.config import Config
from tiergate.gateway import Gateway


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
    ready: bool = False
