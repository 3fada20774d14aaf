"""The advice: the three monthly costs, the break-even volumes, the operational burden and a recommendation.

Hard constraints decide first (air-gapped or sovereign means open weights, whatever the cost); then
fine-tuning favours open or hybrid; otherwise the cheapest option wins, except that self-hosting must
save at least 10% over all-closed Claude to pay for the people and the pager it needs, and all-open
competes only for a narrow task (``open_share >= 0.95``).

    >>> from tiergate.accounting.prices import load_price_table
    >>> from tiergate.economics.tco import resolve_closed_price
    >>> w = Workload.model_validate({
    ...     "requests_per_day": 200_000, "input_tokens": 800, "output_tokens": 300, "open_share": 0.6,
    ...     "closed": {"model": "claude-sonnet-4-5"},
    ...     "open": {"gpu_hourly_usd": 2.69, "tokens_per_second": 3400},
    ...     "operations": {"engineers_fte": 0.5, "engineer_yearly_usd": 200_000}})
    >>> table = load_price_table()
    >>> make_plan(w, resolve_closed_price(w.closed, table), table.version).recommendation
    'hybrid'
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict

from tiergate.accounting.prices import ModelPrice
from tiergate.economics.share import ShareSource
from tiergate.economics.tco import (
    DAYS_PER_MONTH,
    HOURS_PER_MONTH,
    MAX_REQUESTS_PER_DAY,
    MONTH_NOTE,
    Operations,
    Workload,
    break_even_requests_per_day,
    break_even_tokens_per_day,
    closed_monthly_usd,
    hybrid_monthly_usd,
    open_monthly_usd,
    output_tokens_per_second,
    replicas_needed,
)

__all__ = [
    "Advice",
    "Assumptions",
    "BreakEven",
    "Burden",
    "ByOption",
    "Option",
    "make_plan",
    "monthly_costs",
    "recommend",
]

Option: TypeAlias = Literal["closed", "open", "hybrid"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the plan --------------------------------------------------------------------------------------

MIN_SAVING = 0.10  # below this, self-hosting does not pay for its people and pager
NARROW_TASK_SHARE = 0.95  # all-open competes only when the open tier can take (nearly) every request


class ByOption(_Model):
    closed: float
    open: float
    hybrid: float


class BreakEven(_Model):
    open: float | None
    hybrid: float | None


class Burden(_Model):
    """What self-hosting costs in people and machines: always reported, never folded away."""

    engineers_fte: float
    engineers_monthly_usd: float
    fixed_monthly_usd: float
    open_replicas: int
    open_gpus: int
    hybrid_replicas: int
    hybrid_gpus: int
    on_call: str


class Assumptions(_Model):
    hours_per_month: float = HOURS_PER_MONTH
    days_per_month: float = DAYS_PER_MONTH
    peak_to_average: float
    closed_model: str | None
    closed_input_per_mtok: float
    closed_output_per_mtok: float
    price_table_version: str | None
    open_share: ShareSource
    note: str = f"{MONTH_NOTE}; the fleet is sized for the average output rate x peak_to_average"


class Advice(_Model):
    recommendation: Option
    reasons: tuple[str, ...]
    monthly_usd: ByOption
    break_even_requests_per_day: BreakEven
    break_even_tokens_per_day: BreakEven
    operations: Burden
    assumptions: Assumptions


def monthly_costs(w: Workload, price: ModelPrice, requests_per_day: float) -> ByOption:
    return ByOption(
        closed=closed_monthly_usd(w, price, requests_per_day),
        open=open_monthly_usd(w, requests_per_day),
        hybrid=hybrid_monthly_usd(w, price, requests_per_day),
    )


def make_plan(
    w: Workload, price: ModelPrice, price_table_version: str | None = None, share: ShareSource | None = None
) -> Advice:
    """Everything ``tiergate plan`` reports, from the workload and the closed model's price.

    ``share`` says where ``open_share`` was measured (the ledger, a router evaluation), when it was not
    given in the workload; it replaces the workload's figure. Costs are rounded to cents; break-even volumes
    up to the next hundredth of a request, so that the volume reported really does break even.
    """
    if share is None:
        share = ShareSource(source="workload", open_share=w.open_share, basis="given in the workload file")
    elif share.open_share != w.open_share:
        w = w.model_copy(update={"open_share": share.open_share})
    exact = monthly_costs(w, price, w.requests_per_day)
    costs = ByOption(closed=round(exact.closed, 2), open=round(exact.open, 2), hybrid=round(exact.hybrid, 2))
    be_open = _round_up(break_even_requests_per_day(w, price, "open"))
    be_hybrid = _round_up(break_even_requests_per_day(w, price, "hybrid"))
    open_replicas = replicas_needed(w.open, output_tokens_per_second(w, w.requests_per_day, 1.0))
    hybrid_replicas = replicas_needed(w.open, output_tokens_per_second(w, w.requests_per_day, w.open_share))
    ops = w.operations
    burden = Burden(
        engineers_fte=ops.engineers_fte,
        engineers_monthly_usd=round(ops.engineers_fte * ops.engineer_yearly_usd / 12, 2),
        fixed_monthly_usd=ops.fixed_monthly_usd,
        open_replicas=open_replicas,
        open_gpus=open_replicas * w.open.gpus_per_replica,
        hybrid_replicas=hybrid_replicas,
        hybrid_gpus=hybrid_replicas * w.open.gpus_per_replica,
        on_call=on_call_note(ops, open_replicas * w.open.gpus_per_replica),
    )
    choice, reasons = recommend(w, costs, BreakEven(open=be_open, hybrid=be_hybrid), burden)
    return Advice(
        recommendation=choice,
        reasons=reasons,
        monthly_usd=costs,
        break_even_requests_per_day=BreakEven(open=be_open, hybrid=be_hybrid),
        break_even_tokens_per_day=BreakEven(
            open=break_even_tokens_per_day(w, be_open), hybrid=break_even_tokens_per_day(w, be_hybrid)
        ),
        operations=burden,
        assumptions=Assumptions(
            peak_to_average=w.peak_to_average,
            closed_model=w.closed.model,
            closed_input_per_mtok=price.input_per_mtok,
            closed_output_per_mtok=price.output_per_mtok,
            price_table_version=price_table_version,
            open_share=share,
        ),
    )


def on_call_note(ops: Operations, gpus: int) -> str:
    pager = (
        f"Self-hosting puts up to {gpus} GPU(s) on a 24/7 pager: model-server and driver incidents, "
        "capacity, upgrades, and re-evaluating each new open model."
    )
    if ops.engineers_fte == 0:
        return f"{pager} No engineer time is budgeted (operations.engineers_fte is 0): someone still carries it."
    people = _usd(ops.engineers_fte * ops.engineer_yearly_usd / 12)
    return (
        f"{pager} {ops.engineers_fte:g} FTE ({people}/month) is budgeted; a 24/7 rotation needs several "
        "people sharing the pager, so those hours come out of a wider team."
    )


def recommend(w: Workload, costs: ByOption, be: BreakEven, burden: Burden) -> tuple[Option, tuple[str, ...]]:
    """The option to pick and why: hard constraints first, then cost net of the operational burden.

    All-open competes on cost only for a narrow task, one whose requests the open tier can (nearly) all
    take (``open_share >= 0.95``); otherwise it would buy its saving with worse answers on the rest.
    """
    c = w.constraints
    if c.air_gapped or c.sovereign:
        return "open", _forced_open(w, costs)
    narrow = w.open_share >= NARROW_TASK_SHARE
    best: Literal["open", "hybrid"] = "open" if narrow and costs.open <= costs.hybrid else "hybrid"
    best_cost = costs.open if best == "open" else costs.hybrid
    reasons: list[str] = []
    saving = costs.closed - best_cost
    if c.fine_tuning:
        reasons.append(
            "Specialised fine-tuning: the task needs a model tuned on your data, which favours open weights "
            "that you tune and serve yourself."
        )
        reasons.append(_routine(w, costs) if best == "hybrid" else _versus("All-open", costs.open, costs.closed))
    elif costs.closed <= 0 or saving / costs.closed < MIN_SAVING:
        if saving <= 0:
            reasons.append(
                f"All-closed Claude is the cheapest: {_usd(costs.closed)}/month against {_usd(costs.open)} "
                f"all-open and {_usd(costs.hybrid)} hybrid."
            )
        else:
            reasons.append(
                f"Self-hosting ({best}) would save only {saving / costs.closed:.0%} ({_usd(saving)}/month), under "
                f"the {MIN_SAVING:.0%} margin that pays for running it yourself."
            )
        reasons.append(
            "No hard constraint (sovereignty, air-gap, fine-tuning) needs open weights, so closed-weight "
            "Claude spares the operational burden: no GPUs to keep healthy, no on-call rotation, and "
            f"{burden.engineers_fte:g} FTE of engineers free for other work."
        )
        reasons.append(_break_even_line(w, be))
        return "closed", tuple(reasons)
    elif best == "open":
        reasons.append(
            f"High-volume narrow task: at {w.requests_per_day:,.0f} requests/day, self-hosting all traffic saves "
            f"{saving / costs.closed:.0%} ({_usd(saving)}/month) against all-closed Claude."
        )
    else:
        reasons.append(_routine(w, costs))
    if not narrow and costs.open < best_cost:
        reasons.append(
            f"All-open would cost {_usd(costs.open)}/month, but the open tier can take only {w.open_share:.0%} of "
            f"requests: sending it the other {1 - w.open_share:.0%} would trade quality for cost."
        )
    replicas, gpus = (burden.open_replicas, burden.open_gpus)
    if best == "hybrid":
        replicas, gpus = (burden.hybrid_replicas, burden.hybrid_gpus)
    reasons.append(
        f"Operational burden: {burden.engineers_fte:g} FTE ({_usd(burden.engineers_monthly_usd)}/month), "
        f"{gpus} GPU(s) in {replicas} replica(s) and an on-call rotation, all included in the cost above."
    )
    return best, tuple(reasons)


def _forced_open(w: Workload, costs: ByOption) -> tuple[str, ...]:
    c = w.constraints
    reasons = []
    if c.air_gapped:
        reasons.append(
            "Air-gapped / edge deployment: no hosted API is reachable from the site, so only open weights "
            "on your own hardware can serve it, whatever the cost."
        )
    if c.sovereign:
        reasons.append(
            "Absolute data sovereignty: every request must stay inside the perimeter, so no traffic may "
            "go to Claude and hybrid is ruled out too."
        )
    if c.fine_tuning:
        reasons.append("Specialised fine-tuning fits as well: open weights can be tuned on your own data.")
    if w.open_share < 1:
        reasons.append(
            f"The open model must also serve the {1 - w.open_share:.0%} of requests it handles less well: "
            "evaluate it on them, and fine-tune or pick a larger model if needed."
        )
    reasons.append(_versus("All-open", costs.open, costs.closed))
    return tuple(reasons)


def _routine(w: Workload, costs: ByOption) -> str:
    saving = costs.closed - costs.hybrid
    share = f"{saving / costs.closed:.0%}" if costs.closed > 0 else "n/a"
    return (
        f"A large routine share ({w.open_share:.0%} of requests) can go to the open tier: hybrid saves {share} "
        f"({_usd(saving)}/month) against all-closed while Claude keeps the hardest {1 - w.open_share:.0%}."
    )


def _versus(label: str, cost: float, closed: float) -> str:
    if closed <= 0:
        return f"{label} costs {_usd(cost)}/month; all-closed would cost nothing at this volume."
    delta = (cost - closed) / closed
    word = "more" if delta > 0 else "less"
    return f"{label} costs {_usd(cost)}/month against {_usd(closed)} for all-closed ({abs(delta):.0%} {word})."


def _break_even_line(w: Workload, be: BreakEven) -> str:
    parts = []
    for label, value in (("all-open", be.open), ("hybrid", be.hybrid)):
        if value is None:
            parts.append(f"{label} never pays below {MAX_REQUESTS_PER_DAY:,.0f} requests/day")
        else:
            tokens = break_even_tokens_per_day(w, value) or 0.0
            parts.append(f"{label} pays from about {value:,.0f} requests/day ({tokens:,.0f} tokens/day)")
    return "Break-even: " + "; ".join(parts) + "."


def _round_up(value: float | None) -> float | None:
    return None if value is None else math.ceil(value * 100 - 1e-6) / 100


def _usd(value: float) -> str:
    return f"-${-value:,.0f}" if value < 0 else f"${value:,.0f}"
