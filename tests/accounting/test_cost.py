"""The cost model: closed backends by price (configured, overridden or shipped), open ones by measured GPU time."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.accounting.cost import CostModel
from tiergate.accounting.prices import load_price_table
from tiergate.config import BackendConfig, Config, parse_config
from tiergate.errors import ConfigError
from tiergate.types import Usage

CLAUDE = {"name": "claude", "tier": "closed", "kind": "anthropic", "model": "claude-sonnet-4-5"}
GPU = {
    "name": "gpu",
    "tier": "open",
    "kind": "openai",
    "base_url": "http://gpu:8000/v1",
    "cost": {"gpu_hourly_usd": 3.6, "tokens_per_second": 100, "utilisation_window_s": 100},
}
USAGE = Usage(input_tokens=1000, output_tokens=500)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def model(*backends: dict[str, Any], clock: Clock | None = None, **extra: Any) -> tuple[CostModel, Config]:
    config = parse_config({"backends": list(backends), **extra})
    return CostModel(config, load_price_table(), clock=clock or Clock()), config


def backend(config: Config, name: str) -> BackendConfig:
    return next(b for b in config.backends if b.name == name)


def test_closed_backend_priced_from_the_table() -> None:
    costs, config = model(CLAUDE)
    cost = costs.charge(backend(config, "claude"), USAGE)
    # 1,000 x $3/M + 500 x $15/M = $0.003 + $0.0075.
    assert cost.usd == pytest.approx(0.0105)
    assert cost.counterfactual_usd == pytest.approx(0.0105)
    assert cost.marginal_usd == cost.usd  # every closed token is billed
    assert cost.utilisation is None


def test_config_prices_override_the_table_by_model_name() -> None:
    prices = {"claude-sonnet-4-5-20250929": {"input_per_mtok": 2, "output_per_mtok": 10, "cache_read_per_mtok": 0.1}}
    costs, config = model(CLAUDE, prices=prices)
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=10_000, cache_write_tokens=1000)
    cost = costs.charge(backend(config, "claude"), usage)
    # 1,000 x 2 + 500 x 10 + 10,000 x 0.1 (given) + 1,000 x 2.5 (1.25 x input) = 10,500 micro-USD.
    assert cost.usd == pytest.approx(0.0105)
    assert cost.counterfactual_usd == pytest.approx(0.0105)  # the reference model is the overridden one


def test_reference_price_follows_the_override_without_a_closed_backend() -> None:
    costs, config = model(GPU, prices={"claude-sonnet-4-5": {"input_per_mtok": 1, "output_per_mtok": 1}})
    assert costs.reference.input_per_mtok == 1.0
    assert costs.cost(backend(config, "gpu"), USAGE).counterfactual_usd == pytest.approx(0.0015)


def test_a_backend_price_wins_and_may_give_cache_prices() -> None:
    priced = {**CLAUDE, "price": {"input_per_mtok": 4, "output_per_mtok": 20, "cache_write_per_mtok": 6}}
    costs, config = model(priced, prices={"claude-sonnet-4-5": {"input_per_mtok": 1, "output_per_mtok": 1}})
    price = costs.price_of(backend(config, "claude"))
    assert price is not None
    assert (price.input_per_mtok, price.cache_write_per_mtok) == (4.0, 6.0)
    assert price.cache_read_per_mtok == pytest.approx(0.4)  # 0.1 x input, from the table's rule


def test_a_bad_override_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"prices\.claude-sonnet-4-5\.hit: unknown field"):
        parse_config({"prices": {"claude-sonnet-4-5": {"input_per_mtok": 1, "output_per_mtok": 1, "hit": 2}}})


def test_open_backend_amortised_at_measured_utilisation() -> None:
    clock = Clock()
    costs, config = model(GPU, CLAUDE, clock=clock)
    gpu = backend(config, "gpu")
    clock.now = 100.0
    # 2,000 output tokens of a possible 10,000: 20% busy, 2,000 x $1e-5 / 0.2 = $0.10 (input tokens are prefill).
    cost = costs.charge(gpu, Usage(input_tokens=700, output_tokens=2000))
    assert cost.utilisation == pytest.approx(0.2)
    assert cost.usd == pytest.approx(0.10)
    assert cost.marginal_usd == 0.0
    assert cost.counterfactual_usd == pytest.approx((700 * 3 + 2000 * 15) / 1e6)
    assert costs.utilisation(gpu) == pytest.approx(0.2)
    assert costs.utilisation(backend(config, "claude")) is None


def test_estimates_record_nothing() -> None:
    clock = Clock()
    costs, config = model(GPU, clock=clock)
    gpu = backend(config, "gpu")
    clock.now = 100.0
    assert costs.cost(gpu, Usage(output_tokens=2000)).usd == pytest.approx(0.10)
    assert costs.utilisation(gpu) == 0.0
    assert costs.cost(gpu, Usage(input_tokens=10)).usd == 0.0  # the header estimate of a stream: no output yet


def test_open_backend_beyond_capacity_has_a_marginal_cost() -> None:
    clock = Clock()
    costs, config = model(GPU, clock=clock)
    gpu = backend(config, "gpu")
    clock.now = 100.0
    costs.charge(gpu, Usage(output_tokens=9500))
    over = costs.charge(gpu, Usage(output_tokens=1000))
    assert over.utilisation == 1.0
    assert over.marginal_usd == pytest.approx(500 * 1e-5)  # the 500 tokens past 10,000


def test_open_backend_without_a_cost_section_is_free() -> None:
    bare = {"name": "bare", "tier": "open", "kind": "openai", "base_url": "http://x/v1"}
    costs, config = model(bare)
    cost = costs.charge(backend(config, "bare"), USAGE)
    assert (cost.usd, cost.marginal_usd, cost.utilisation) == (0.0, 0.0, None)
    assert cost.counterfactual_usd == pytest.approx(0.0105)


def test_message_batches_cost_the_batch_price_and_offline_work_compares_at_it() -> None:
    costs, config = model(CLAUDE, GPU)
    claude, gpu = backend(config, "claude"), backend(config, "gpu")
    batched = costs.charge(claude, USAGE, batch=True)
    assert batched.usd == pytest.approx(0.0105 / 2)  # Message Batches: 50% of every price
    assert batched.counterfactual_usd == pytest.approx(0.0105 / 2)  # like for like: all-Claude in batches
    assert batched.marginal_usd == batched.usd
    live_closed_offline = costs.charge(claude, USAGE, offline=True)  # a closed item sent live in a batch run
    assert live_closed_offline.usd == pytest.approx(0.0105)
    assert live_closed_offline.counterfactual_usd == pytest.approx(0.0105 / 2)
    open_offline = costs.charge(gpu, USAGE, offline=True)
    assert open_offline.counterfactual_usd == pytest.approx(0.0105 / 2)
    assert open_offline.usd == costs.charge(gpu, USAGE).usd  # GPU time is GPU time, batch or not
