"""What one request cost, what it added to the bill, and what the reference closed model would have charged.

Closed backends are priced per token: the backend's configured ``price``, else the price table by model name
(the shipped table with the configuration's ``prices`` over it). Every closed token is billed, so their
marginal cost is their cost.

Open backends on owned or rented GPUs (a ``cost`` section) are priced by amortised hardware time at the
utilisation the gateway measures, with the marginal cost beside it (zero while capacity is idle): see
:mod:`tiergate.accounting.utilisation`. An open backend without a ``cost`` section costs nothing.

:meth:`CostModel.cost` estimates and records nothing (budget reservations, response headers sent before the
answer); :meth:`CostModel.charge` is called once per finished request and counts its tokens as delivered.

Offline work (``tiergate batch``, ``offline=True``) is compared with the reference model at the batch price
(the price table's ``batch_discount``): the like-for-like alternative is the same work sent to Claude's
Message Batches. A request billed through Message Batches (``batch=True``) costs the batch price itself.

    >>> from tiergate.accounting.prices import load_price_table
    >>> from tiergate.config import parse_config
    >>> config = parse_config({"backends": [
    ...     {"name": "gpu", "tier": "open", "kind": "openai", "base_url": "http://gpu:8000/v1",
    ...      "cost": {"gpu_hourly_usd": 3.6, "tokens_per_second": 100, "utilisation_window_s": 100}}]})
    >>> clock = iter([0.0, 100.0]).__next__
    >>> costs = CostModel(config, load_price_table(), clock=clock)
    >>> c = costs.charge(config.backends[0], Usage(input_tokens=10, output_tokens=2_000))
    >>> round(c.usd, 6), c.marginal_usd, c.utilisation
    (0.1, 0.0, 0.2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tiergate.accounting.prices import ModelPrice, PriceTable, token_cost
from tiergate.accounting.utilisation import Charge, Meter
from tiergate.config import BackendConfig, Config
from tiergate.types import Tier, Usage

__all__ = ["REFERENCE_MODEL", "Cost", "CostModel"]

REFERENCE_MODEL = "claude-sonnet-4-5"


@dataclass(frozen=True, slots=True)
class Cost:
    """``usd``: the cost (amortised on open backends, the bill on closed ones); ``marginal_usd``: what the
    request added to the bill; ``utilisation``: the open backend's measured busy share, else ``None``."""

    usd: float
    counterfactual_usd: float
    marginal_usd: float = 0.0
    utilisation: float | None = None


class CostModel:
    def __init__(self, config: Config, table: PriceTable, clock: Callable[[], float] = time.monotonic) -> None:
        table = table.with_overrides(config.prices) if config.prices else table
        self._table = table
        self._clock = clock
        self._prices: dict[str, ModelPrice | None] = {}
        self._meters: dict[str, Meter] = {}
        started = clock()
        for b in config.backends:
            if b.price is not None:
                self._prices[b.name] = table.price_from(b.price, f"backends.{b.name}.price")
            elif b.tier is Tier.CLOSED:
                self._prices[b.name] = table.lookup(b.model or REFERENCE_MODEL)
            elif b.cost is not None:
                c = b.cost
                self._meters[b.name] = Meter(
                    gpu_hourly_usd=c.gpu_hourly_usd,
                    gpus=c.gpus,
                    tokens_per_second=c.tokens_per_second,
                    window_s=c.utilisation_window_s,
                    started=started,
                )
        closed = next((b for b in config.backends if b.tier is Tier.CLOSED), None)
        configured = self._prices.get(closed.name) if closed is not None else None
        self.reference: ModelPrice = configured or table.price_of(REFERENCE_MODEL)

    def price_of(self, backend: BackendConfig) -> ModelPrice | None:
        return self._prices.get(backend.name)

    def utilisation(self, backend: BackendConfig) -> float | None:
        """The open backend's busy share over its window, now; ``None`` for backends without a ``cost``."""
        meter = self._meters.get(backend.name)
        return None if meter is None else meter.utilisation(self._clock())

    def cost(self, backend: BackendConfig, usage: Usage, model: str | None = None) -> Cost:
        """An estimate: what ``usage`` would cost on ``backend`` now. Records nothing. ``model``: the model
        served, where the backend served another than its configured one (a Claude model the caller named)."""
        meter = self._meters.get(backend.name)
        charge = None if meter is None else meter.price(usage.output_tokens, self._clock())
        return self._cost(backend, usage, charge, model)

    def charge(
        self,
        backend: BackendConfig,
        usage: Usage,
        model: str | None = None,
        *,
        batch: bool = False,
        offline: bool = False,
    ) -> Cost:
        """What a finished request cost; its output tokens count towards the backend's measured utilisation.

        ``model``: the model served, where the backend served another than its configured one; ``batch``: billed
        through a batch API (Message Batches), at the batch price; ``offline``: offline work, compared with the
        reference model at the batch price (``batch`` implies it).
        """
        meter = self._meters.get(backend.name)
        charge = None if meter is None else meter.charge(usage.output_tokens, self._clock())
        return self._cost(backend, usage, charge, model, batch=batch, offline=offline or batch)

    def _cost(
        self,
        backend: BackendConfig,
        usage: Usage,
        charge: Charge | None,
        model: str | None,
        *,
        batch: bool = False,
        offline: bool = False,
    ) -> Cost:
        tokens = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens)
        counterfactual = token_cost(self.reference, *tokens, batch=offline)
        if charge is not None:
            return Cost(charge.usd, counterfactual, charge.marginal_usd, charge.utilisation)
        price = self._prices.get(backend.name)
        if model is not None and backend.price is None and (served := self._table.lookup(model)) is not None:
            price = served  # a configured price stands for whatever the backend serves
        usd = 0.0 if price is None else token_cost(price, *tokens, batch=batch)
        return Cost(usd, counterfactual, marginal_usd=usd)
