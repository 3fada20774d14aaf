"""Closed-model token prices: the shipped table, model-name normalisation and the cost arithmetic.

The table is package data (``tiergate/data/prices.yaml``), versioned and dated per entry; it is read
when :func:`load_price_table` is called, never at import and never from the network. Build it once at
start-up and keep it.

    >>> table = load_price_table()
    >>> price = table.price_of("anthropic.claude-sonnet-4-5-20250929-v1:0")
    >>> token_cost(price, input_tokens=1_000_000, output_tokens=100_000)
    4.5
    >>> table = table.with_overrides({"claude-sonnet-4-5": {"input_per_mtok": 2, "output_per_mtok": 10}})
    >>> table.price_of("claude-sonnet-4-5@20250929").output_per_mtok
    10.0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from importlib import resources
from typing import Literal, Protocol, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tiergate.errors import ConfigError

__all__ = [
    "ModelPrice",
    "PriceLike",
    "PriceTable",
    "TokenPriceLike",
    "amortised_cost_per_token",
    "load_price_table",
    "normalise_model_name",
    "parse_price_table",
    "token_cost",
]

SECONDS_PER_HOUR = 3600
TOKENS_PER_MTOK = 1_000_000

# Suffixes that name a snapshot or a packaging of a model, not a different price.
_SUFFIXES = (
    re.compile(r"\[[^\]]*\]$"),  # claude-sonnet-4-5[1m]
    re.compile(r"-v\d+(?::\d+)?$"),  # Bedrock: ...-v1:0
    re.compile(r"-(?:\d{8}|latest)$"),  # dated snapshot or -latest alias
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Model):
    """What one model costs, in USD per million tokens."""

    input_per_mtok: float = Field(ge=0, description="uncached input tokens")
    output_per_mtok: float = Field(ge=0)
    cache_write_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float = Field(ge=0)
    batch_discount: float = Field(ge=0, le=1, description="share taken off every price on batch calls")
    checked_at: date | None = None


class TokenPriceLike(Protocol):
    """Anything with the two list prices, such as ``tiergate.config.TokenPrice``."""

    @property
    def input_per_mtok(self) -> float: ...

    @property
    def output_per_mtok(self) -> float: ...


#: A price as configuration gives it; a ``TokenPriceLike`` may also carry ``cache_write_per_mtok`` and
#: ``cache_read_per_mtok`` (``None``: derived from the input price by the table's multipliers).
PriceLike: TypeAlias = TokenPriceLike | Mapping[str, float | None]


class _Override(_Model):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)


class _Entry(_Override):
    checked_at: date
    aliases: tuple[str, ...] = ()


class _PriceFile(_Model):
    version: str = Field(min_length=1)
    currency: Literal["USD"]
    cache_write_multiplier: float = Field(ge=0)
    cache_read_multiplier: float = Field(ge=0)
    batch_discount: float = Field(ge=0, le=1)
    models: dict[str, _Entry]


def normalise_model_name(name: str) -> str:
    """The price-table key for a model id as Anthropic, Bedrock, Vertex or a router spells it.

    >>> normalise_model_name("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    'claude-sonnet-4-5'
    >>> normalise_model_name("claude-sonnet-4-5@20250929")
    'claude-sonnet-4-5'
    """
    key = name.strip().lower().rsplit("/", 1)[-1]  # "anthropic/claude-..." and Bedrock ARNs
    if "anthropic." in key:  # Bedrock ids, with or without a cross-region prefix (us., eu., global.)
        key = key.split("anthropic.", 1)[1]
    key = key.split("@", 1)[0]  # Vertex snapshot: claude-sonnet-4-5@20250929
    for suffix in _SUFFIXES:
        key = suffix.sub("", key)
    return key


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by normalised model name, plus the multipliers that derive cache prices."""

    version: str
    prices: Mapping[str, ModelPrice]
    cache_write_multiplier: float = 1.25
    cache_read_multiplier: float = 0.1
    batch_discount: float = 0.5

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (any spelling :func:`normalise_model_name` knows), or ``None``."""
        exact = self.prices.get(model)
        return exact if exact is not None else self.prices.get(normalise_model_name(model))

    def price_of(self, model: str) -> ModelPrice:
        """Like :meth:`lookup`, but an unknown model raises ``KeyError`` naming the known ones."""
        price = self.lookup(model)
        if price is None:
            known = ", ".join(self.names())
            raise KeyError(f"no price for model {model!r}; known: {known}; or give its price explicitly")
        return price

    def names(self) -> list[str]:
        return sorted(self.prices)

    def price(self, input_per_mtok: float, output_per_mtok: float, checked_at: date | None = None) -> ModelPrice:
        """A price built from the two list prices, with this table's cache and batch rules."""
        return self._derive(_Override(input_per_mtok=input_per_mtok, output_per_mtok=output_per_mtok), checked_at)

    def price_from(self, given: PriceLike, name: str = "price") -> ModelPrice:
        """A price as configuration gives it (a ``TokenPrice`` or a mapping); cache prices it omits follow
        this table's multipliers. A wrong one raises ``ConfigError`` naming ``name`` and the field."""
        try:
            if isinstance(given, Mapping):
                override = _Override.model_validate(dict(given))
            else:
                override = _Override(
                    input_per_mtok=given.input_per_mtok,
                    output_per_mtok=given.output_per_mtok,
                    cache_write_per_mtok=getattr(given, "cache_write_per_mtok", None),
                    cache_read_per_mtok=getattr(given, "cache_read_per_mtok", None),
                )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{name}.{field}: {first['msg']}") from None
        return self._derive(override, None)

    def with_overrides(self, overrides: Mapping[str, PriceLike]) -> PriceTable:
        """A copy where each named model costs what the configuration says (names are normalised)."""
        prices = dict(self.prices)
        for name, given in overrides.items():
            prices[normalise_model_name(name)] = self.price_from(given, f"prices.{name}")
        version = f"{self.version}+overrides" if overrides else self.version
        return replace(self, version=version, prices=prices)

    def _derive(self, entry: _Override, checked_at: date | None) -> ModelPrice:
        write = entry.cache_write_per_mtok
        read = entry.cache_read_per_mtok
        return ModelPrice(
            input_per_mtok=entry.input_per_mtok,
            output_per_mtok=entry.output_per_mtok,
            cache_write_per_mtok=entry.input_per_mtok * self.cache_write_multiplier if write is None else write,
            cache_read_per_mtok=entry.input_per_mtok * self.cache_read_multiplier if read is None else read,
            batch_discount=self.batch_discount,
            checked_at=checked_at,
        )


def parse_price_table(data: object, source: str = "prices.yaml") -> PriceTable:
    """Build a table from the parsed YAML document; a wrong document raises ``ConfigError``."""
    try:
        doc = _PriceFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {field}: {first['msg']}") from None
    table = PriceTable(
        version=doc.version,
        prices={},
        cache_write_multiplier=doc.cache_write_multiplier,
        cache_read_multiplier=doc.cache_read_multiplier,
        batch_discount=doc.batch_discount,
    )
    prices: dict[str, ModelPrice] = {}
    for name, entry in doc.models.items():
        price = table._derive(entry, entry.checked_at)
        for key in (name, *entry.aliases):
            prices[normalise_model_name(key)] = price
    return replace(table, prices=prices)


def load_price_table(overrides: Mapping[str, PriceLike] | None = None) -> PriceTable:
    """Read the shipped table (package data, no network), then apply the configuration's overrides."""
    text = resources.files("tiergate").joinpath("data").joinpath("prices.yaml").read_text(encoding="utf-8")
    table = parse_price_table(yaml.safe_load(text))
    return table.with_overrides(overrides) if overrides else table


def token_cost(
    price: ModelPrice,
    input_tokens: float,
    output_tokens: float,
    cache_read_tokens: float = 0,
    cache_write_tokens: float = 0,
    batch: bool = False,
) -> float:
    """USD for one call (or a sum of calls), counting tokens as Anthropic's ``usage`` reports them.

    ``input_tokens`` excludes the cached ones; cache reads and writes are billed at their own prices.
    The batch discount applies to every kind of token (Anthropic lets it stack with caching).

    >>> p = ModelPrice(input_per_mtok=3, output_per_mtok=15, cache_write_per_mtok=3.75,
    ...                cache_read_per_mtok=0.3, batch_discount=0.5)
    >>> round(token_cost(p, 1000, 500, cache_read_tokens=10_000, batch=True), 8)
    0.00675
    """
    counts = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
    if any(count < 0 for count in counts):
        raise ValueError("token counts cannot be negative")
    micro_usd = (
        input_tokens * price.input_per_mtok
        + output_tokens * price.output_per_mtok
        + cache_read_tokens * price.cache_read_per_mtok
        + cache_write_tokens * price.cache_write_per_mtok
    )
    usd = micro_usd / TOKENS_PER_MTOK
    return usd * (1 - price.batch_discount) if batch else usd


def amortised_cost_per_token(gpu_hourly_usd: float, gpus: int, tokens_per_second: float, utilisation: float) -> float:
    """USD per generated token on self-hosted GPUs: hourly cost / tokens actually produced in an hour.

    ``tokens_per_second`` is the replica's throughput when busy; ``utilisation`` the share of time it is.

    >>> amortised_cost_per_token(3.6, gpus=1, tokens_per_second=1000, utilisation=0.5)
    2e-06
    """
    if gpu_hourly_usd < 0:
        raise ValueError("gpu_hourly_usd cannot be negative")
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    if tokens_per_second <= 0:
        raise ValueError("tokens_per_second must be positive")
    if not 0 < utilisation <= 1:
        raise ValueError("utilisation must be in (0, 1]")
    return gpu_hourly_usd * gpus / (SECONDS_PER_HOUR * tokens_per_second * utilisation)
