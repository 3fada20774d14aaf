"""The shipped price table, model-name normalisation, overrides and the cost arithmetic (by hand)."""

from __future__ import annotations

import socket
from datetime import date

import pytest

from tiergate.accounting.prices import (
    ModelPrice,
    PriceTable,
    amortised_cost_per_token,
    load_price_table,
    normalise_model_name,
    parse_price_table,
    token_cost,
)
from tiergate.config import TokenPrice
from tiergate.errors import ConfigError


@pytest.fixture
def table() -> PriceTable:
    return load_price_table()


def sonnet(table: PriceTable) -> ModelPrice:
    return table.price_of("claude-sonnet-4-5")


# --- the shipped table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "input_price", "output_price"),
    [
        ("claude-opus-4-5", 5.0, 25.0),
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
        ("claude-opus-4-1", 15.0, 75.0),
        ("claude-sonnet-4", 3.0, 15.0),
        ("claude-3-5-haiku", 0.80, 4.0),
    ],
)
def test_shipped_list_prices(table: PriceTable, model: str, input_price: float, output_price: float) -> None:
    price = table.price_of(model)
    assert (price.input_per_mtok, price.output_per_mtok) == (input_price, output_price)


def test_table_is_versioned_and_every_entry_dated(table: PriceTable) -> None:
    assert table.version
    assert all(isinstance(table.price_of(name).checked_at, date) for name in table.names())


def test_cache_and_batch_rules(table: PriceTable) -> None:
    # Sonnet 4.5: input $3 -> cache write 1.25 x 3 = $3.75, cache read 0.1 x 3 = $0.30; batch 50% off.
    price = sonnet(table)
    assert price.cache_write_per_mtok == pytest.approx(3.75)
    assert price.cache_read_per_mtok == pytest.approx(0.30)
    assert price.batch_discount == 0.5


def test_loading_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the price table must not use the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert load_price_table().lookup("claude-haiku-4-5") is not None


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "Claude-Sonnet-4-5",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5@20250929",
        "anthropic/claude-sonnet-4-5",
        "claude-sonnet-4-5[1m]",
    ],
)
def test_normalisation(name: str) -> None:
    assert normalise_model_name(name) == "claude-sonnet-4-5"


def test_dated_ids_do_not_collapse_into_a_newer_model(table: PriceTable) -> None:
    # claude-sonnet-4-20250514 is Sonnet 4, not Sonnet 4.5; claude-opus-4-1-20250805 is Opus 4.1, not Opus 4.
    assert normalise_model_name("claude-sonnet-4-20250514") == "claude-sonnet-4"
    assert table.price_of("claude-opus-4-1-20250805").input_per_mtok == 15.0
    assert table.price_of("claude-3-5-haiku-latest").input_per_mtok == pytest.approx(0.80)
    assert table.price_of("claude-sonnet-4-0") == table.price_of("claude-sonnet-4")


def test_unknown_model(table: PriceTable) -> None:
    assert table.lookup("gpt-oss-120b") is None
    with pytest.raises(KeyError, match="gpt-oss-120b"):
        table.price_of("gpt-oss-120b")


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_from_config_mapping_and_models(table: PriceTable) -> None:
    custom = table.with_overrides(
        {
            "claude-sonnet-4-5-20250929": {"input_per_mtok": 2.0, "output_per_mtok": 10.0},
            "my-enterprise-claude": TokenPrice(input_per_mtok=1.5, output_per_mtok=7.5),
        }
    )
    price = custom.price_of("anthropic.claude-sonnet-4-5-20250929-v1:0")
    # Overrides keep the table's rules: cache write 1.25 x 2 = 2.5, cache read 0.1 x 2 = 0.2.
    assert (price.input_per_mtok, price.output_per_mtok) == (2.0, 10.0)
    assert price.cache_write_per_mtok == pytest.approx(2.5)
    assert price.cache_read_per_mtok == pytest.approx(0.2)
    assert custom.price_of("my-enterprise-claude").output_per_mtok == 7.5
    assert custom.version == f"{table.version}+overrides"
    assert sonnet(table).input_per_mtok == 3.0  # the original table is untouched


def test_bad_override_names_the_field(table: PriceTable) -> None:
    with pytest.raises(ConfigError, match=r"prices\.x\.input_per_mtok"):
        table.with_overrides({"x": {"input_per_mtok": -1.0, "output_per_mtok": 1.0}})
    with pytest.raises(ConfigError, match=r"prices\.x\.cache_hit_per_mtok: Extra inputs"):
        table.with_overrides({"x": {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "cache_hit_per_mtok": 0.1}})


def test_explicit_price_uses_table_rules(table: PriceTable) -> None:
    price = table.price(4.0, 20.0)
    assert price.cache_read_per_mtok == pytest.approx(0.4)
    assert price.cache_write_per_mtok == pytest.approx(5.0)


def test_bad_price_document() -> None:
    with pytest.raises(ConfigError, match=r"prices\.yaml: models\.m\.checked_at"):
        parse_price_table(
            {
                "version": "1",
                "currency": "USD",
                "cache_write_multiplier": 1.25,
                "cache_read_multiplier": 0.1,
                "batch_discount": 0.5,
                "models": {"m": {"input_per_mtok": 1, "output_per_mtok": 2}},
            }
        )


# --- token_cost ----------------------------------------------------------------------------------


def test_token_cost_plain(table: PriceTable) -> None:
    # 1,000 input x $3/M = $0.003; 500 output x $15/M = $0.0075; total $0.0105.
    assert token_cost(sonnet(table), 1000, 500) == pytest.approx(0.0105)
    # Opus 4.5: 2M input x $5/M = $10; 1M output x $25/M = $25; total $35.
    assert token_cost(table.price_of("claude-opus-4-5"), 2_000_000, 1_000_000) == pytest.approx(35.0)


def test_token_cost_with_cache_and_batch(table: PriceTable) -> None:
    price = sonnet(table)
    # + 10,000 cache reads x $0.30/M = $0.003 -> $0.0135; + 2,000 cache writes x $3.75/M = $0.0075 -> $0.021.
    assert token_cost(price, 1000, 500, cache_read_tokens=10_000) == pytest.approx(0.0135)
    assert token_cost(price, 1000, 500, cache_read_tokens=10_000, cache_write_tokens=2000) == pytest.approx(0.021)
    # Batch halves everything: $0.021 / 2 = $0.0105.
    both = token_cost(price, 1000, 500, cache_read_tokens=10_000, cache_write_tokens=2000, batch=True)
    assert both == pytest.approx(0.0105)
    assert token_cost(price, 0, 0) == 0.0


def test_token_cost_rejects_negative_counts(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="negative"):
        token_cost(sonnet(table), -1, 0)


# --- amortised GPU cost --------------------------------------------------------------------------


def test_amortised_cost_per_token() -> None:
    # $2.69/h, 1 GPU, 3,400 tok/s at 60%: 2.69 / (3600 x 3400 x 0.6) = 2.69 / 7,344,000 = $3.6629e-7 per token,
    # i.e. about $0.366 per million tokens.
    per_token = amortised_cost_per_token(2.69, 1, 3400, 0.6)
    assert per_token == pytest.approx(2.69 / 7_344_000)
    assert per_token * 1_000_000 == pytest.approx(0.36629, abs=1e-5)
    # 4 GPUs at $2/h, 1,000 tok/s, fully busy: 8 / 3,600,000 = $2.2222e-6.
    assert amortised_cost_per_token(2.0, 4, 1000, 1.0) == pytest.approx(8 / 3_600_000)


@pytest.mark.parametrize(
    ("hourly", "gpus", "tps", "utilisation"),
    [(-1.0, 1, 100.0, 0.5), (1.0, 0, 100.0, 0.5), (1.0, 1, 0.0, 0.5), (1.0, 1, 100.0, 0.0), (1.0, 1, 100.0, 1.5)],
)
def test_amortised_cost_rejects_nonsense(hourly: float, gpus: int, tps: float, utilisation: float) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        amortised_cost_per_token(hourly, gpus, tps, utilisation)
