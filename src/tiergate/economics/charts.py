"""The cost chart: monthly cost of each option against daily volume, break-even volumes marked.

matplotlib is imported inside :func:`cost_chart_png` (Agg canvas, no pyplot and so no global figure
state), so importing this module costs nothing and a server that never draws never loads it.
"""

from __future__ import annotations

import io
import math

from tiergate.accounting.prices import ModelPrice
from tiergate.economics.advice import Advice, monthly_costs
from tiergate.economics.tco import SECONDS_PER_DAY, Workload

__all__ = ["chart_volumes", "cost_chart_png"]

_SAMPLES = 400
_MAX_EDGES = 400  # replica steps drawn as true steps up to this many; beyond, sampling is fine enough
_COLOURS = {"closed": "#c15f3c", "open": "#2f6f9f", "hybrid": "#5b8c3a"}


def chart_volumes(w: Workload, plan: Advice) -> list[float]:
    """Requests/day to evaluate: an even grid, each replica step (both sides), break-evens, today's volume."""
    marks = [v for v in (plan.break_even_requests_per_day.open, plan.break_even_requests_per_day.hybrid) if v]
    top = max([2 * w.requests_per_day, 1.25 * max(marks, default=0.0), 1000.0])
    points = {top * i / _SAMPLES for i in range(_SAMPLES + 1)} | set(marks) | {w.requests_per_day}
    for share in {1.0, w.open_share}:
        per_request = share * w.output_tokens * w.peak_to_average / SECONDS_PER_DAY
        if per_request <= 0:
            continue
        capacity = w.open.tokens_per_second * w.open.target_utilisation / per_request  # req/day per replica
        steps = math.floor(top / capacity)
        if steps <= _MAX_EDGES:
            for n in range(1, steps + 1):
                points |= {n * capacity, math.nextafter(n * capacity, math.inf)}
    return sorted(p for p in points if 0 <= p <= top)


def cost_chart_png(w: Workload, price: ModelPrice, plan: Advice) -> bytes:
    """A PNG of monthly USD against requests/day for all-closed, all-open and hybrid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    xs = chart_volumes(w, plan)
    costs = [monthly_costs(w, price, x) for x in xs]
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    for option, label in (("closed", "all-closed (Claude)"), ("open", "all-open (self-hosted)"), ("hybrid", "hybrid")):
        ys = [getattr(c, option) for c in costs]
        ax.plot(xs, ys, label=label, color=_COLOURS[option], linewidth=1.8)
    for option in ("open", "hybrid"):
        be = getattr(plan.break_even_requests_per_day, option)
        if be is None:
            continue
        y = getattr(monthly_costs(w, price, be), option)
        ax.axvline(be, color=_COLOURS[option], linestyle=":", linewidth=1)
        ax.plot([be], [y], marker="o", color=_COLOURS[option])
        ax.annotate(
            f"break-even ({option})\n{be:,.0f} req/day",
            (be, y),
            textcoords="offset points",
            xytext=(6, -28),
            fontsize=8,
            color=_COLOURS[option],
        )
    ax.axvline(w.requests_per_day, color="#555555", linestyle="--", linewidth=1, label="your volume")
    ax.set_xlabel("requests per day")
    ax.set_ylabel("USD per month (730 h / 30.4 days)")
    ax.set_title(f"Monthly cost against volume: recommendation {plan.recommendation}")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"${v:,.0f}"))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
