"""``tiergate plan WORKLOAD.yaml``: the cost of all-closed, all-open and hybrid, and which to pick.

Usage::

    tiergate plan examples/workload.yaml
    tiergate plan examples/workload.yaml --json | jq .recommendation
    tiergate plan examples/workload.yaml --html report.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from tiergate.accounting.prices import load_price_table
from tiergate.economics.advice import Plan, make_plan
from tiergate.economics.charts import cost_chart_png
from tiergate.economics.html import render_report
from tiergate.economics.tco import MONTH_NOTE, load_workload, resolve_closed_price
from tiergate.errors import ConfigError

__all__ = ["plan", "register"]

_LABELS = {"closed": "All-closed (Claude)", "open": "All-open (self-hosted)", "hybrid": "Hybrid"}


def plan(
    workload: Annotated[Path, typer.Argument(help="Workload YAML (see examples/workload.yaml).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON, for scripts.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with the cost chart.")] = None,
) -> None:
    """Compare the monthly cost of all-closed, all-open and hybrid for a workload, and recommend one."""
    try:
        spec = load_workload(workload)
        table = load_price_table()
        price = resolve_closed_price(spec.closed, table)
    except ConfigError as exc:
        _fail(exc.message)
    result = make_plan(spec, price, table.version)
    if html is not None:
        page = render_report(result, cost_chart_png(spec, price, result), title=f"tiergate plan: {workload.name}")
        try:
            html.write_text(page, encoding="utf-8")
        except OSError as exc:
            _fail(f"{html}: cannot write the report ({exc.strerror})")
    if json_out:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        _show(result, Console())
        if html is not None:
            typer.echo(f"Report written to {html}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _money(value: float | None) -> str:
    return "never" if value is None else f"${value:,.0f}"


def _count(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def _show(result: Plan, console: Console) -> None:
    costs = result.monthly_usd
    costs_table = Table(title="Monthly cost", title_justify="left")
    for column in ("Option", "USD / month", "vs all-closed", "Break-even req/day", "Break-even tokens/day"):
        costs_table.add_column(column, justify="left" if column == "Option" else "right")
    for option, label in _LABELS.items():
        cost = getattr(costs, option)
        delta = "" if option == "closed" or costs.closed <= 0 else f"{(cost - costs.closed) / costs.closed:+.0%}"
        be = "" if option == "closed" else _count(getattr(result.break_even_requests_per_day, option))
        be_tokens = "" if option == "closed" else _count(getattr(result.break_even_tokens_per_day, option))
        style = "bold" if option == result.recommendation else None
        costs_table.add_row(label, _money(cost), delta, be, be_tokens, style=style)
    console.print(costs_table)

    ops = result.operations
    burden = Table(title="Operational burden of self-hosting", title_justify="left", show_header=False)
    burden.add_column("What")
    burden.add_column("How much")
    burden.add_row("Engineers", f"{ops.engineers_fte:g} FTE ({_money(ops.engineers_monthly_usd)}/month)")
    burden.add_row("Other fixed costs", f"{_money(ops.fixed_monthly_usd)}/month")
    burden.add_row("All-open fleet", f"{ops.open_replicas} replica(s), {ops.open_gpus} GPU(s)")
    burden.add_row("Hybrid fleet", f"{ops.hybrid_replicas} replica(s), {ops.hybrid_gpus} GPU(s)")
    burden.add_row("On-call", ops.on_call)
    console.print(burden)

    console.print(f"[bold]Recommendation: {result.recommendation}[/bold]")
    reasons = Table.grid(padding=(0, 1))
    reasons.add_column(width=2, justify="right")
    reasons.add_column()
    for reason in result.reasons:
        reasons.add_row("-", reason)
    console.print(reasons, highlight=False)
    console.print(f"[dim]Note: {MONTH_NOTE}; prices from table {result.assumptions.price_table_version}.[/dim]")
