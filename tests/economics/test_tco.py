"""TCO arithmetic, break-even and recommendation, checked against hand calculations written out below.

Contract example (the workload in examples/workload.yaml), priced with Sonnet 4.5 at $3 / $15 per MTok:

    closed per request = (800 x 3 + 300 x 15) / 1e6             = $0.0069
    all-closed         = 200,000 x 0.0069 x 30.4                 = $41,952.00 / month
    all-open rate      = 200,000 x 300 / 86,400                  = 694.44 output tok/s
    replicas           = max(2, ceil(694.44 / (3,400 x 0.6)))    = max(2, ceil(0.34)) = 2
    GPUs               = 2 x 1 x 2.69 x 730                      = $3,927.40
    operations         = 0.5 x 200,000 / 12                      = $8,333.33
    all-open           = 3,927.40 + 8,333.33                     = $12,260.73
    hybrid             = 0.4 x 41,952 + (2 replicas for 60%: 416.67 tok/s) 12,260.73
                       = 16,780.80 + 12,260.73                   = $29,041.53
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pytest

from tiergate.accounting.prices import ModelPrice, PriceTable, load_price_table
from tiergate.economics.advice import make_plan
from tiergate.economics.charts import chart_volumes, cost_chart_png
from tiergate.economics.tco import (
    OpenTier,
    Workload,
    break_even_requests_per_day,
    closed_monthly_usd,
    hybrid_monthly_usd,
    load_workload,
    open_monthly_usd,
    parse_workload,
    replicas_needed,
    resolve_closed_price,
)
from tiergate.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workload.yaml"

BASE: dict[str, Any] = {
    "requests_per_day": 200_000,
    "input_tokens": 800,
    "output_tokens": 300,
    "open_share": 0.6,
    "closed": {"model": "claude-sonnet-4-5"},
    "open": {
        "gpu_hourly_usd": 2.69,
        "gpus_per_replica": 1,
        "tokens_per_second": 3400,
        "min_replicas": 2,
        "target_utilisation": 0.6,
    },
    "operations": {"engineers_fte": 0.5, "engineer_yearly_usd": 200_000, "fixed_monthly_usd": 0},
    "constraints": {"sovereign": False, "air_gapped": False, "fine_tuning": False},
}

# A small workload whose numbers are easy by hand: $0.01 per request on the closed side
# (0 input tokens; 1,000 output tokens x $10/M), so all-closed = R x 0.01 x 30.4 = 0.304 x R per month.
# One replica carries 100 tok/s x 1.0 x 86,400 / 1,000 = 8,640 requests/day and costs 1 x 730 = $730/month.
STEPPY: dict[str, Any] = {
    "requests_per_day": 10_000,
    "input_tokens": 0,
    "output_tokens": 1000,
    "open_share": 1.0,
    "closed": {"input_per_mtok": 0, "output_per_mtok": 10},
    "open": {"gpu_hourly_usd": 1.0, "tokens_per_second": 100, "min_replicas": 1, "target_utilisation": 1.0},
    "operations": {"engineers_fte": 0, "fixed_monthly_usd": 2000},
}


def make(base: dict[str, Any], **changes: Any) -> Workload:
    data = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return Workload.model_validate(data)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_table()


def priced(w: Workload, table: PriceTable) -> ModelPrice:
    return resolve_closed_price(w.closed, table)


# --- monthly costs -------------------------------------------------------------------------------


def test_contract_example_costs(table: PriceTable) -> None:
    w = make(BASE)
    plan = make_plan(w, priced(w, table), table.version)
    assert plan.monthly_usd.closed == pytest.approx(41_952.00)
    assert plan.monthly_usd.open == pytest.approx(12_260.73)
    assert plan.monthly_usd.hybrid == pytest.approx(29_041.53)
    assert (plan.operations.open_replicas, plan.operations.hybrid_replicas) == (2, 2)
    assert plan.operations.engineers_monthly_usd == pytest.approx(8_333.33)
    assert plan.assumptions.hours_per_month == 730
    assert plan.assumptions.days_per_month == 30.4


def test_peak_to_average_sizes_the_fleet(table: PriceTable) -> None:
    # x6: all-open needs 694.44 x 6 = 4,166.67 tok/s / 2,040 = 2.04 -> 3 replicas:
    #     3 x 2.69 x 730 + 8,333.33 = 5,891.10 + 8,333.33 = $14,224.43.
    # Hybrid: 416.67 x 6 = 2,500 / 2,040 = 1.23 -> 2 replicas, so its open part stays $12,260.73.
    w = make(BASE, peak_to_average=6)
    plan = make_plan(w, priced(w, table))
    assert plan.operations.open_replicas == 3
    assert plan.monthly_usd.open == pytest.approx(14_224.43)
    assert plan.monthly_usd.hybrid == pytest.approx(29_041.53)


def test_replicas_at_exact_capacity() -> None:
    # Usable capacity per replica = 100 x 0.5 = 50 tok/s: 150 tok/s is exactly 3 replicas, a hair more is 4.
    tier = OpenTier(gpu_hourly_usd=1, tokens_per_second=100, min_replicas=1, target_utilisation=0.5)
    assert replicas_needed(tier, 150.0) == 3
    assert replicas_needed(tier, 150.01) == 4
    assert replicas_needed(tier, 0.0) == 1


def test_cache_and_batch_on_the_closed_side(table: PriceTable) -> None:
    # Half the input cached: 400 x 3 + 400 x 0.3 + 300 x 15 = 1,200 + 120 + 4,500 = 5,820 micro-USD per request;
    # batch halves it to 2,910: 200,000 x 0.00291 x 30.4 = $17,692.80.
    w = make(BASE, closed={"cached_input_share": 0.5, "batch": True})
    assert closed_monthly_usd(w, priced(w, table), w.requests_per_day) == pytest.approx(17_692.80)


# --- break-even ----------------------------------------------------------------------------------


def test_contract_break_even(table: PriceTable) -> None:
    # Slope of all-closed: 0.0069 x 30.4 = $0.20976 per month per request/day. At the floor of 2 replicas,
    # all-open costs $12,260.73, reached by all-closed at 12,260.7333 / 0.20976 = 58,451.25 requests/day
    # (inside the 2-replica range, which runs to 2 x 2,040 x 86,400 / 300 = 1,175,040).
    # Hybrid moves 60% of the traffic: 12,260.7333 / (0.6 x 0.20976) = 97,418.75 requests/day.
    w = make(BASE)
    plan = make_plan(w, priced(w, table))
    assert plan.break_even_requests_per_day.open == pytest.approx(58_451.25, abs=0.01)
    assert plan.break_even_requests_per_day.hybrid == pytest.approx(97_418.75, abs=0.01)
    # In tokens: requests x (800 + 300).
    assert plan.break_even_tokens_per_day.open == pytest.approx(58_451.25 * 1100, abs=20)


def test_break_even_past_a_replica_step(table: PriceTable) -> None:
    # STEPPY: fixed F = $2,000, one replica G = $730, slope a = 0.304, k = 8,640 requests/day per replica.
    # With 1 replica: (2,000 + 730) / 0.304 = 8,980.26 > 8,640, outside the 1-replica range: no crossing there.
    # With 2 replicas (8,640, 17,280]: (2,000 + 1,460) / 0.304 = 11,381.58: the break-even.
    # (Formula: n* = max(1, ceil(F / (a x k - G))) = ceil(2,000 / (2,626.56 - 730)) = ceil(1.05) = 2.)
    w = make(STEPPY)
    price = priced(w, table)
    be = break_even_requests_per_day(w, price, "open")
    assert be is not None
    assert be == pytest.approx(3460 / 0.304)
    assert open_monthly_usd(w, 8640) > closed_monthly_usd(w, price, 8640)  # best point of the 1-replica range
    assert open_monthly_usd(w, be) <= closed_monthly_usd(w, price, be) + 1e-9
    assert open_monthly_usd(w, be - 0.01) > closed_monthly_usd(w, price, be - 0.01)


def test_break_even_never(table: PriceTable) -> None:
    # A replica at $10/h costs 7,300/month but carries only 8,640 x 0.304 = $2,626.56 of closed traffic: never.
    w = make(STEPPY, open={"gpu_hourly_usd": 10.0})
    plan = make_plan(w, priced(w, table))
    assert plan.break_even_requests_per_day.open is None
    assert plan.break_even_tokens_per_day.open is None


@pytest.mark.parametrize("option", ["open", "hybrid"])
@pytest.mark.parametrize("fixed", [0.0, 500.0, 5_000.0, 40_000.0])
@pytest.mark.parametrize(("hourly", "min_replicas"), [(0.5, 1), (1.0, 1), (1.5, 3), (2.5, 2)])
def test_break_even_is_the_smallest_volume(
    table: PriceTable, option: Literal["open", "hybrid"], fixed: float, hourly: float, min_replicas: int
) -> None:
    w = make(
        STEPPY,
        open_share=0.7,
        operations={"fixed_monthly_usd": fixed},
        open={"gpu_hourly_usd": hourly, "min_replicas": min_replicas},
    )
    price = priced(w, table)

    def cost(r: float) -> float:
        return open_monthly_usd(w, r) if option == "open" else hybrid_monthly_usd(w, price, r)

    def closed(r: float) -> float:
        return closed_monthly_usd(w, price, r)

    be = break_even_requests_per_day(w, price, option)
    share = 1.0 if option == "open" else 0.7
    capacity = 8640 / share  # requests/day per replica for this option
    if be is None:  # never: no replica range ends cheaper than all-closed, up to a generous bound
        assert all(cost(n * capacity) > closed(n * capacity) for n in range(1, 500))
        return
    assert cost(be) <= closed(be) + 1e-6
    # Within a range the open cost is flat and all-closed rises, so each earlier range is best at its right end.
    for n in range(1, int(be // capacity) + 1):
        assert cost(n * capacity) > closed(n * capacity)
    assert cost(be * (1 - 1e-9) - 1e-6) > closed(be * (1 - 1e-9) - 1e-6)


# --- recommendation ------------------------------------------------------------------------------


def test_large_routine_share_recommends_hybrid(table: PriceTable) -> None:
    # Hybrid saves (41,952 - 29,041.53) / 41,952 = 31%. All-open is cheaper still, but the open tier can take
    # only 60% of requests, so it is not a candidate; the reasons say so and show the burden.
    w = make(BASE)
    plan = make_plan(w, priced(w, table))
    assert plan.recommendation == "hybrid"
    text = " ".join(plan.reasons)
    assert "routine share (60% of requests)" in text
    assert "31%" in text
    assert "only 60%" in text
    assert "on-call" in text


def test_narrow_high_volume_task_recommends_open(table: PriceTable) -> None:
    # open_share 1: all-open = hybrid = $12,260.73 against $41,952: saves 71%.
    w = make(BASE, open_share=1.0)
    plan = make_plan(w, priced(w, table))
    assert plan.recommendation == "open"
    assert "High-volume narrow task" in plan.reasons[0]
    assert "71%" in plan.reasons[0]


def test_small_saving_prefers_closed_for_the_operational_burden(table: PriceTable) -> None:
    # Fixed costs of $27,739.27 lift all-open to 3,927.40 + 8,333.33 + 27,739.27 = $40,000.00:
    # a saving of 1,952 / 41,952 = 4.7% < 10%, so closed, and the reasons name the on-call burden.
    w = make(BASE, open_share=1.0, operations={"fixed_monthly_usd": 27_739.27})
    plan = make_plan(w, priced(w, table))
    assert plan.monthly_usd.open == pytest.approx(40_000.00, abs=0.01)
    assert plan.recommendation == "closed"
    assert "only 5%" in plan.reasons[0]
    assert "on-call" in plan.reasons[1]


def test_low_volume_recommends_closed(table: PriceTable) -> None:
    # 1,000 requests/day: all-closed = 1,000 x 0.0069 x 30.4 = $209.76; all-open still $12,260.73.
    w = make(BASE, requests_per_day=1000)
    plan = make_plan(w, priced(w, table))
    assert plan.monthly_usd.closed == pytest.approx(209.76)
    assert plan.recommendation == "closed"
    assert plan.reasons[0].startswith("All-closed Claude is the cheapest")
    assert "58,451 requests/day" in plan.reasons[2]


def test_air_gapped_forces_open_whatever_the_cost(table: PriceTable) -> None:
    # Same 1,000 requests/day: all-open costs 58x all-closed, but an air-gapped site cannot reach Claude.
    w = make(BASE, requests_per_day=1000, constraints={"air_gapped": True})
    plan = make_plan(w, priced(w, table))
    assert plan.monthly_usd.open > 50 * plan.monthly_usd.closed
    assert plan.recommendation == "open"
    assert "Air-gapped" in plan.reasons[0]
    assert "whatever the cost" in plan.reasons[0]
    assert "more" in plan.reasons[-1]


def test_sovereignty_forces_open_and_rules_out_hybrid(table: PriceTable) -> None:
    w = make(BASE, requests_per_day=1000, constraints={"sovereign": True})
    plan = make_plan(w, priced(w, table))
    assert plan.recommendation == "open"
    assert "perimeter" in plan.reasons[0]
    assert "hybrid is ruled out" in plan.reasons[0]
    assert "40% of requests it handles less well" in plan.reasons[1]


def test_fine_tuning_favours_open_weights(table: PriceTable) -> None:
    # At 1,000 requests/day closed is cheapest, but fine-tuning needs open weights: hybrid (open_share 0.6),
    # or all-open when the open tier can take every request.
    w = make(BASE, requests_per_day=1000, constraints={"fine_tuning": True})
    plan = make_plan(w, priced(w, table))
    assert plan.recommendation == "hybrid"
    assert "fine-tuning" in plan.reasons[0]
    w = make(BASE, requests_per_day=1000, open_share=1.0, constraints={"fine_tuning": True})
    assert make_plan(w, priced(w, table)).recommendation == "open"


def test_burden_is_shown_even_when_unbudgeted(table: PriceTable) -> None:
    w = make(BASE, operations={"engineers_fte": 0})
    burden = make_plan(w, priced(w, table)).operations
    assert "24/7" in burden.on_call
    assert "No engineer time is budgeted" in burden.on_call
    assert (burden.open_gpus, burden.hybrid_gpus) == (2, 2)


# --- the workload file ---------------------------------------------------------------------------


def test_example_file_is_the_contract() -> None:
    assert load_workload(EXAMPLE) == make(
        BASE,
        open={"model": "llama-3.1-8b-instruct", "gpu": "H100 80GB"},
        closed={"cached_input_share": 0.0, "batch": False},
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"open": {**BASE["open"], "gpu_hourly": 1}}, "open.gpu_hourly: unknown field"),
        ({"open_share": 1.5}, "open_share: Input should be less than or equal to 1"),
        ({"closed": {}}, "closed: give the closed model's name, or input_per_mtok and output_per_mtok"),
        ({"closed": {"input_per_mtok": 3}}, "closed: give both input_per_mtok and output_per_mtok"),
        ({"open": {**BASE["open"], "min_replicas": 0}}, "open.min_replicas: Input should be greater than or equal"),
        ({"requests_per_day": "lots"}, "requests_per_day: Input should be a valid number"),
    ],
)
def test_bad_fields_name_the_path_and_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="w.yaml: " + message.replace(".", r"\.")) as info:
        parse_workload({**BASE, **change}, "w.yaml")
    assert "examples/workload.yaml" in info.value.message


def test_missing_field_and_wrong_shape() -> None:
    data = {k: v for k, v in BASE.items() if k != "requests_per_day"}
    with pytest.raises(ConfigError, match="requests_per_day: required field is missing; add it"):
        parse_workload(data)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_workload([1, 2])


def test_closed_price_resolution(table: PriceTable) -> None:
    named = make(BASE, closed={"model": "anthropic.claude-opus-4-5-20251101-v1:0"})
    assert priced(named, table).output_per_mtok == 25.0
    explicit = make(BASE, closed={"model": "claude-opus-4-5", "input_per_mtok": 1, "output_per_mtok": 2})
    assert (priced(explicit, table).input_per_mtok, priced(explicit, table).output_per_mtok) == (1, 2)
    with pytest.raises(ConfigError, match=r"closed\.model: no price for 'gpt-9'; use one of .*claude-sonnet-4-5"):
        priced(make(BASE, closed={"model": "gpt-9"}), table)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the workload file"):
        load_workload(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("requests_per_day: 1\nopen: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_workload(bad)


# --- chart ---------------------------------------------------------------------------------------


def test_chart_volumes_cover_the_marks_and_the_steps(table: PriceTable) -> None:
    w = make(STEPPY)
    plan = make_plan(w, priced(w, table))
    xs = chart_volumes(w, plan)
    assert xs == sorted(xs)
    assert w.requests_per_day in xs
    assert plan.break_even_requests_per_day.open in xs
    assert 8640.0 in xs  # a replica step, drawn as a step


def test_chart_is_a_png(table: PriceTable) -> None:
    w = make(BASE)
    price = priced(w, table)
    png = cost_chart_png(w, price, make_plan(w, price))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
