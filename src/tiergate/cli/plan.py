"""``tiergate plan WORKLOAD.yaml``: the cost of all-closed, all-open and hybrid, and which to pick.

Usage::

    tiergate plan examples/workload.yaml
    tiergate plan examples/workload.yaml --json | jq .recommendation
    tiergate plan examples/workload.yaml --html report.html
    tiergate plan examples/workload.yaml --from-ledger --since 30d      # open_share from real traffic
    tiergate plan examples/workload.yaml --from-eval preds.jsonl        # ... or from a router evaluation

``--from-ledger`` reads the ledger of ``--config`` (or ``./tiergate.yaml``), or the one at ``--db``.
``--from-eval`` reads the predictions ``tiergate router score`` writes; the threshold is ``--threshold``,
else the shipped router's calibrated one.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tiergate.accounting.ledger import Ledger
from tiergate.accounting.prices import load_price_table
from tiergate.accounting.summary import parse_since
from tiergate.cli.failure import fail
from tiergate.config import load_config
from tiergate.economics.advice import Advice, make_plan
from tiergate.economics.charts import cost_chart_png
from tiergate.economics.html import render_report
from tiergate.economics.share import ShareSource, load_scores, share_from_rows, share_from_scores
from tiergate.economics.tco import MONTH_NOTE, load_workload, resolve_closed_price
from tiergate.errors import ConfigError

__all__ = ["plan", "register"]

_LABELS = {"closed": "All-closed (Claude)", "open": "All-open (self-hosted)", "hybrid": "Hybrid"}


def plan(
    workload: Annotated[Path, typer.Argument(help="Workload YAML (see examples/workload.yaml).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON, for scripts.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with the cost chart.")] = None,
    from_ledger: Annotated[
        bool, typer.Option("--from-ledger", help="Measure open_share from the ledger's real traffic.")
    ] = False,
    since: Annotated[str, typer.Option(help="With --from-ledger: window (30d, 12h, an ISO date, 'all').")] = "30d",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="tiergate.yaml whose ledger to read.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Ledger URL, e.g. sqlite:///tiergate.db.")] = None,
    from_eval: Annotated[
        Path | None, typer.Option("--from-eval", help="Measure open_share from router predictions (JSONL).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="With --from-eval: the router threshold.")
    ] = None,
) -> None:
    """Compare the monthly cost of all-closed, all-open and hybrid for a workload, and recommend one."""
    if from_ledger and from_eval is not None:
        fail("give --from-ledger or --from-eval, not both", code=2)
    if config is not None and db is not None:
        fail("give --config or --db, not both", code=2)
    if not from_ledger and (config is not None or db is not None):
        fail("--config and --db name the ledger for --from-ledger; add it", code=2)
    if from_eval is None and threshold is not None:
        fail("--threshold applies to --from-eval; add it", code=2)
    try:
        spec = load_workload(workload)
        table = load_price_table()
        price = resolve_closed_price(spec.closed, table)
        share: ShareSource | None = None
        if from_ledger:
            share = _share_from_ledger(db or load_config(config).ledger.url, since)
        elif from_eval is not None:
            share = share_from_scores(load_scores(from_eval), _threshold(threshold), from_eval.name)
    except (ConfigError, ValueError) as exc:
        fail(exc.message if isinstance(exc, ConfigError) else str(exc), code=2)
    if share is not None:
        spec = spec.model_copy(update={"open_share": share.open_share})
    result = make_plan(spec, price, table.version, share)
    if html is not None:
        page = render_report(result, cost_chart_png(spec, price, result), title=f"tiergate plan: {workload.name}")
        try:
            html.write_text(page, encoding="utf-8")
        except OSError as exc:
            fail(f"{html}: cannot write the report ({exc.strerror})", code=2)
    if json_out:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        _show(result, Console())
        if html is not None:
            typer.echo(f"Report written to {html}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def _share_from_ledger(url: str, since: str) -> ShareSource:
    start = parse_since(since)
    window = "the whole ledger" if start is None else f"the ledger since {start:%Y-%m-%d %H:%M} UTC"

    async def read() -> ShareSource:
        ledger = Ledger(url)
        await ledger.start(writer=False)
        try:
            return share_from_rows(await ledger.rows(start, datetime.now(UTC)), window)
        finally:
            await ledger.close()

    return asyncio.run(read())


def _threshold(given: float | None) -> float:
    if given is not None:
        return given
    from tiergate.routing.learned import LearnedModel  # numpy and the artifact: only when needed

    return LearnedModel.default().threshold


def _money(value: float | None) -> str:
    return "never" if value is None else f"${value:,.0f}"


def _count(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def _show(result: Advice, console: Console) -> None:
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
    share = result.assumptions.open_share
    console.print(f"Open share: {share.open_share:.1%} ({share.basis})", highlight=False)

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
