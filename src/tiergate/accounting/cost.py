"""What one request cost, and what the reference closed model would have charged for the same tokens.

Closed backends are priced per token (the configured ``price``, else the shipped price table by model name).
Open backends on owned or rented GPUs are priced by amortised hardware time: ``gpu_hourly_usd x gpus``
spread over the tokens the backend generates per second (at full utilisation: the floor of the real cost;
the ledger refines it with measured utilisation).
"""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.accounting.prices import ModelPrice, PriceTable, amortised_cost_per_token, token_cost
from tiergate.config import BackendConfig, Config
from tiergate.types import Tier, Usage

REFERENCE_MODEL = "claude-sonnet-4-5"


@dataclass(frozen=True, slots=True)
class Cost:
    usd: float
    counterfactual_usd: float


class CostModel:
    def __init__(self, config: Config, table: PriceTable) -> None:
        self._prices: dict[str, ModelPrice | None] = {}
        self._per_token: dict[str, float] = {}
        for b in config.backends:
            if b.price is not None:
                self._prices[b.name] = table.price(b.price.input_per_mtok, b.price.output_per_mtok)
            elif b.tier is Tier.CLOSED:
                self._prices[b.name] = table.lookup(b.model or REFERENCE_MODEL)
            elif b.cost is not None:
                c = b.cost
                self._per_token[b.name] = amortised_cost_per_token(c.gpu_hourly_usd, c.gpus, c.tokens_per_second, 1.0)
        closed = next((b for b in config.backends if b.tier is Tier.CLOSED), None)
        configured = self._prices.get(closed.name) if closed is not None else None
        self.reference: ModelPrice = configured or table.price_of(REFERENCE_MODEL)

    def price_of(self, backend: BackendConfig) -> ModelPrice | None:
        return self._prices.get(backend.name)

    def cost(self, backend: BackendConfig, usage: Usage) -> Cost:
        counterfactual = token_cost(
            self.reference, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens
        )
        price = self._prices.get(backend.name)
        if price is not None:
            usd = token_cost(
                price, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens
            )
        else:
            usd = self._per_token.get(backend.name, 0.0) * usage.output_tokens
        return Cost(usd, counterfactual)
