"""``tiergate report``: traffic mix, cost against all-closed, latency and failovers, from the ledger.

Usage::

    tiergate report                          # last 7 days, ledger from tiergate.yaml (or ./tiergate.db)
    tiergate report --since 24h --html report.html
    tiergate report --db postgresql+asyncpg://gw@db/ledger --json
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
from tiergate.accounting.report_html import (
    BACKEND_HEAD,
    TIER_HEAD,
    WORK_HEAD,
    backend_rows,
    money,
    overview_rows,
    render_report,
    tier_rows,
    work_rows,
)
from tiergate.accounting.summary import Summary, parse_since, summarise
from tiergate.cli.failure import fail
from tiergate.config import load_config
from tiergate.errors import ConfigError

__all__ = ["register", "report"]


def report(
    since: Annotated[str, typer.Option(help="Window: 7d, 24h, 30m, 2w, an ISO date, or 'all'.")] = "7d",
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with charts.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON, for scripts.")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="tiergate.yaml whose ledger to read.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Ledger URL, e.g. sqlite:///tiergate.db.")] = None,
) -> None:
    """Summarise the ledger: traffic by tier and reason, the saving against all-closed, latency, failovers,
    and per backend the amortised and marginal cost with the utilisation measured on open-weight GPUs."""
    if config is not None and db is not None:
        fail("give --config or --db, not both", code=2)
    try:
        start = parse_since(since)
        url = db or load_config(config).ledger.url
        summary = asyncio.run(_summarise(url, start))
    except (ConfigError, ValueError) as exc:
        fail(exc.message if isinstance(exc, ConfigError) else str(exc), code=2)
    window = "all time" if start is None else f"since {start:%Y-%m-%d %H:%M} UTC"
    if html is not None:
        try:
            html.write_text(render_report(summary, f"tiergate report: {window}"), encoding="utf-8")
        except OSError as exc:
            fail(f"{html}: cannot write the report ({exc.strerror})", code=2)
    if json_out:
        typer.echo(json.dumps(summary.to_json(), indent=2))
        return
    _show(summary, window, Console())
    if html is not None:
        typer.echo(f"Report written to {html}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)


async def _summarise(url: str, since: datetime | None) -> Summary:
    ledger = Ledger(url)
    await ledger.start(writer=False)
    try:
        rows = await ledger.rows(since)
    finally:
        await ledger.close()
    return summarise(rows, since, datetime.now(UTC))


def _table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(head):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _show(s: Summary, window: str, console: Console) -> None:
    console.print(_table(f"tiergate report: {window}", ["Figure", "Value"], overview_rows(s)))
    if not s.requests:
        console.print("[dim]No requests in this window.[/dim]")
        return
    if any(w.kind == "batch" for w in s.work):
        console.print(_table("Live traffic and batch work", WORK_HEAD, work_rows(s)))
    no_tokens = [row[:3] + row[4:] for row in [TIER_HEAD, *tier_rows(s)]]  # 80 columns; the HTML has them
    console.print(_table("By tier", no_tokens[0], no_tokens[1:]))
    by_backend = [row[:3] + row[4:] for row in [BACKEND_HEAD, *backend_rows(s)]]
    console.print(_table("By backend", by_backend[0], by_backend[1:]))
    reasons = [[r.label, f"{r.requests:,}", f"{r.share:.1%}"] for r in s.reasons]
    console.print(_table("Route reasons", ["Reason", "Requests", "Share"], reasons))
    keys = [[k.key, f"{k.requests:,}", money(k.cost_usd)] for k in s.keys]
    console.print(_table("By key", ["Key", "Requests", "Cost"], keys))
