"""Total cost of ownership: all-closed (Claude), all-open (self-hosted) and hybrid, per month.

A month is 730 hours of GPU time and 30.4 days of traffic. The formulas, worked through in
``docs/tco.md``::

    closed  = requests/day x share x cost per request x 30.4
    open    = replicas x gpus_per_replica x gpu_hourly_usd x 730 + operations
    hybrid  = closed(1 - open_share) + open(open_share)
    replicas = max(min_replicas, ceil(output tokens/s needed / (tokens_per_second x target_utilisation)))

    >>> w = Workload.model_validate({
    ...     "requests_per_day": 200_000, "input_tokens": 800, "output_tokens": 300, "open_share": 0.6,
    ...     "closed": {"input_per_mtok": 3, "output_per_mtok": 15},
    ...     "open": {"gpu_hourly_usd": 2.69, "tokens_per_second": 3400},
    ...     "operations": {"engineers_fte": 0.5, "engineer_yearly_usd": 200_000}})
    >>> price = ModelPrice(input_per_mtok=3, output_per_mtok=15, cache_write_per_mtok=3.75,
    ...                    cache_read_per_mtok=0.3, batch_discount=0.5)
    >>> round(closed_monthly_usd(w, price, w.requests_per_day), 2)
    41952.0
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiergate.accounting.prices import ModelPrice, PriceTable, token_cost
from tiergate.errors import ConfigError

HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = 30.4
SECONDS_PER_DAY = 86_400.0
MONTH_NOTE = "a month is 730 hours of GPU time and 30.4 days of traffic"
MAX_REQUESTS_PER_DAY = 1e9  # break-even beyond this is reported as never (null)
_EPS = 1e-9  # keeps ceil() from adding a replica for a rounding error


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the workload file -----------------------------------------------------------------------------


class ClosedTier(_Model):
    """The Claude model, by name (priced from the shipped table) or by explicit prices (which win)."""

    model: str | None = None
    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_share: float = Field(default=0.0, ge=0, le=1, description="input tokens read from the prompt cache")
    batch: bool = Field(default=False, description="sent through the Message Batches API (50% off)")

    @model_validator(mode="after")
    def _priced(self) -> ClosedTier:
        if (self.input_per_mtok is None) != (self.output_per_mtok is None):
            raise ValueError("give both input_per_mtok and output_per_mtok, or neither")
        if self.model is None and self.input_per_mtok is None:
            raise ValueError("give the closed model's name, or input_per_mtok and output_per_mtok")
        return self


class OpenTier(_Model):
    """The self-hosted deployment. ``tokens_per_second`` is one replica's output throughput at full load."""

    model: str | None = None
    gpu: str | None = Field(default=None, description="GPU type, for the report (e.g. 'H100 80GB')")
    gpu_hourly_usd: float = Field(ge=0)
    gpus_per_replica: int = Field(default=1, ge=1)
    tokens_per_second: float = Field(gt=0)
    min_replicas: int = Field(default=2, ge=1, description="floor kept for redundancy, whatever the load")
    target_utilisation: float = Field(default=0.6, gt=0, le=1)


class Operations(_Model):
    engineers_fte: float = Field(ge=0)
    engineer_yearly_usd: float = Field(default=0.0, ge=0)
    fixed_monthly_usd: float = Field(default=0.0, ge=0, description="monitoring, storage, support contracts, ...")

    @property
    def monthly_usd(self) -> float:
        return self.engineers_fte * self.engineer_yearly_usd / 12 + self.fixed_monthly_usd


class Constraints(_Model):
    sovereign: bool = Field(default=False, description="no request may leave the perimeter")
    air_gapped: bool = Field(default=False, description="air-gapped or edge site: no hosted API is reachable")
    fine_tuning: bool = Field(default=False, description="the task needs a model fine-tuned on your data")


class Workload(_Model):
    requests_per_day: float = Field(ge=0)
    input_tokens: float = Field(ge=0, description="average per request")
    output_tokens: float = Field(ge=0, description="average per request")
    open_share: float = Field(ge=0, le=1, description="share of requests the open tier can take")
    peak_to_average: float = Field(default=1.0, ge=1, description="sizes the fleet for the peak, not the average")
    closed: ClosedTier
    open: OpenTier
    operations: Operations
    constraints: Constraints = Constraints()


# --- the arithmetic --------------------------------------------------------------------------------


def closed_cost_per_request(w: Workload, price: ModelPrice) -> float:
    """USD for one average request on Claude, with the cached share of input at the cache-read price."""
    cached = w.input_tokens * w.closed.cached_input_share
    return token_cost(price, w.input_tokens - cached, w.output_tokens, cache_read_tokens=cached, batch=w.closed.batch)


def closed_monthly_usd(w: Workload, price: ModelPrice, requests_per_day: float, share: float = 1.0) -> float:
    """Claude's bill for ``share`` of ``requests_per_day``, over a 30.4-day month."""
    return requests_per_day * share * closed_cost_per_request(w, price) * DAYS_PER_MONTH


def output_tokens_per_second(w: Workload, requests_per_day: float, share: float) -> float:
    """Output tokens/s the open tier must generate for ``share`` of the traffic.

    This is the day's *average* rate, multiplied by ``peak_to_average`` (1.0 unless the workload says
    otherwise): traffic is rarely flat, so give the ratio of your busiest hour to the mean.
    """
    return requests_per_day * share * w.output_tokens * w.peak_to_average / SECONDS_PER_DAY


def replicas_needed(open_tier: OpenTier, tokens_per_second_needed: float) -> int:
    usable = open_tier.tokens_per_second * open_tier.target_utilisation
    return max(open_tier.min_replicas, math.ceil(tokens_per_second_needed / usable - _EPS))


def gpu_monthly_usd(open_tier: OpenTier, replicas: int) -> float:
    return replicas * open_tier.gpus_per_replica * open_tier.gpu_hourly_usd * HOURS_PER_MONTH


def open_monthly_usd(w: Workload, requests_per_day: float, share: float = 1.0) -> float:
    """The self-hosted fleet sized for ``share`` of the traffic, plus the operations that run it."""
    replicas = replicas_needed(w.open, output_tokens_per_second(w, requests_per_day, share))
    return gpu_monthly_usd(w.open, replicas) + w.operations.monthly_usd


def hybrid_monthly_usd(w: Workload, price: ModelPrice, requests_per_day: float) -> float:
    closed = closed_monthly_usd(w, price, requests_per_day, 1 - w.open_share)
    return closed + open_monthly_usd(w, requests_per_day, w.open_share)


def break_even_requests_per_day(w: Workload, price: ModelPrice, option: Literal["open", "hybrid"]) -> float | None:
    """The smallest requests/day at which ``option`` costs no more than all-closed, or ``None``.

    Both sides are exact: the open cost is a step function of the replica count n, so for each n the
    closed bill (a line through 0) crosses it at (fixed + n x per-replica) / slope, and the first n whose
    crossing falls inside its own range of traffic is the answer. It is solved in closed form, not searched.
    Past it, a replica step can lift self-hosting back above all-closed for a while (the chart shows it).
    """
    share = 1.0 if option == "open" else w.open_share
    slope = share * closed_monthly_usd(w, price, 1.0)  # USD/month per req/day moved
    fixed = w.operations.monthly_usd
    per_replica = gpu_monthly_usd(w.open, 1)
    floor = w.open.min_replicas
    tokens_per_request = share * w.output_tokens * w.peak_to_average / SECONDS_PER_DAY
    usable = w.open.tokens_per_second * w.open.target_utilisation
    if slope <= 0:
        return 0.0 if fixed + per_replica * floor <= 0 else None
    if tokens_per_request <= 0:  # the open tier generates nothing: the fleet never grows past its floor
        replicas = floor
    else:
        # fixed + per_replica x n <= slope x n x capacity  <=>  n x margin >= fixed
        margin = slope * usable / tokens_per_request - per_replica
        if margin <= 0:
            if not (margin == 0 and fixed == 0):
                return None
            replicas = floor
        else:
            replicas = max(floor, math.ceil(fixed / margin - _EPS))
    requests = (fixed + per_replica * replicas) / slope
    return requests if requests <= MAX_REQUESTS_PER_DAY else None


def break_even_tokens_per_day(w: Workload, requests_per_day: float | None) -> float | None:
    return None if requests_per_day is None else requests_per_day * (w.input_tokens + w.output_tokens)


# --- reading the file ------------------------------------------------------------------------------

_EXAMPLE = "see examples/workload.yaml"


def parse_workload(data: object, source: str = "workload") -> Workload:
    """Validate a parsed workload document; a wrong one raises ``ConfigError`` naming the field and fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of workload keys; {_EXAMPLE}")
    try:
        return Workload.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also shows up as a missing one; the misspelling is the more useful report.
        first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            fix = "unknown field; remove it or check its spelling"
        elif first["type"] == "missing":
            fix = "required field is missing; add it"
        else:
            fix = first["msg"].removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{source}: {field}: {fix}{more}; {_EXAMPLE}") from None


def load_workload(path: Path) -> Workload:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the workload file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; check indentation and quoting") from None
    return parse_workload(data, str(path))


def resolve_closed_price(closed: ClosedTier, table: PriceTable) -> ModelPrice:
    """Explicit prices win; otherwise the model's entry in the price table."""
    if closed.input_per_mtok is not None and closed.output_per_mtok is not None:
        return table.price(closed.input_per_mtok, closed.output_per_mtok)
    assert closed.model is not None  # ClosedTier's validator guarantees a name or prices
    price = table.lookup(closed.model)
    if price is None:
        known = ", ".join(table.names())
        raise ConfigError(
            f"closed.model: no price for {closed.model!r}; use one of {known}, "
            "or give closed.input_per_mtok and closed.output_per_mtok"
        )
    return price
