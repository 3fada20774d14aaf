"""The ``--html`` report: one self-contained page, the chart embedded as a base64 PNG."""

from __future__ import annotations

import base64
from html import escape

from tiergate.economics.advice import Advice

__all__ = ["render_report"]

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 54rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pick { font-weight: bold; }
img { max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
"""


def _money(value: float | None) -> str:
    return "never" if value is None else f"${value:,.0f}"


def _count(value: float | None) -> str:
    return "never (&gt; 1e9/day)" if value is None else f"{value:,.0f}"


def render_report(plan: Advice, png: bytes, title: str = "tiergate plan") -> str:
    """The HTML page for ``plan``; ``png`` is the cost chart from :func:`cost_chart_png`."""
    costs = plan.monthly_usd
    be = plan.break_even_requests_per_day
    be_tokens = plan.break_even_tokens_per_day
    ops = plan.operations
    rows = []
    for option, label in (("closed", "All-closed (Claude)"), ("open", "All-open (self-hosted)"), ("hybrid", "Hybrid")):
        cost = getattr(costs, option)
        delta = "" if option == "closed" or costs.closed <= 0 else f"{(cost - costs.closed) / costs.closed:+.0%}"
        requests = "" if option == "closed" else _count(getattr(be, option))
        tokens = "" if option == "closed" else _count(getattr(be_tokens, option))
        pick = ' class="pick"' if option == plan.recommendation else ""
        rows.append(
            f"<tr{pick}><td>{label}</td><td>{_money(cost)}</td><td>{delta}</td>"
            f"<td>{requests}</td><td>{tokens}</td></tr>"
        )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in plan.reasons)
    image = base64.b64encode(png).decode("ascii")
    a = plan.assumptions
    model = escape(a.closed_model or "explicit prices")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<h2>Recommendation: {escape(plan.recommendation)}</h2>
<ul>{reasons}</ul>
<h2>Monthly cost</h2>
<table>
<tr><th>Option</th><th>USD / month</th><th>vs all-closed</th>
<th>Break-even req/day</th><th>Break-even tokens/day</th></tr>
{"".join(rows)}
</table>
<p>Open share: {a.open_share.open_share:.1%} ({escape(a.open_share.basis)}).</p>
<img src="data:image/png;base64,{image}" alt="Monthly cost against requests per day, with break-even volumes">
<h2>Operational burden of self-hosting</h2>
<table>
<tr><td>Engineers</td><td>{ops.engineers_fte:g} FTE ({_money(ops.engineers_monthly_usd)}/month)</td></tr>
<tr><td>Other fixed costs</td><td>{_money(ops.fixed_monthly_usd)}/month</td></tr>
<tr><td>All-open fleet</td><td>{ops.open_replicas} replica(s), {ops.open_gpus} GPU(s)</td></tr>
<tr><td>Hybrid fleet</td><td>{ops.hybrid_replicas} replica(s), {ops.hybrid_gpus} GPU(s)</td></tr>
</table>
<p>{escape(ops.on_call)}</p>
<p class="note">Closed model: {model} at ${a.closed_input_per_mtok:g} / ${a.closed_output_per_mtok:g} per million
input / output tokens (price table {escape(a.price_table_version or "n/a")}). {escape(a.note)}; peak to average
{a.peak_to_average:g}.</p>
</body></html>
"""
