"""``tiergate batch IN.jsonl --out OUT.jsonl``: route many requests like live ones; the closed half through
Anthropic's Message Batches at half price; resumable; results in input order (docs/batch.md).

Usage::

    tiergate batch tickets.jsonl --out answers.jsonl                  # waits for every result
    tiergate batch tickets.jsonl --out answers.jsonl --no-wait        # submits, exits 75 while batches run
    tiergate batch tickets.jsonl --out answers.jsonl                  # the same command again: resumes
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from tiergate.batch.runner import BatchOptions, Report, run_batch
from tiergate.cli.failure import fail
from tiergate.config import load_config
from tiergate.errors import ConfigError, TiergateError
from tiergate.types import Dialect

__all__ = ["batch", "register"]

#: The exit status of a run that submitted Message Batches and did not wait for them (EX_TEMPFAIL).
PENDING_EXIT = 75


class Bar:
    """The run's progress on stderr: items routed, live items answered, Message Batch results read."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self.routed_task = self.progress.add_task("routed", total=None)
        self.live = self.progress.add_task("open / live", total=None)
        self.batched = self.progress.add_task("message batches", total=None)

    def start(self, total: int, counts: dict[str, int]) -> None:
        p = self.progress
        p.update(self.routed_task, total=total, completed=counts.get("items", 0))
        p.update(self.live, total=counts.get("live", 0), completed=counts.get("live_done", 0))
        p.update(self.batched, total=counts.get("message-batch", 0), completed=counts.get("message-batch_done", 0))

    def _task(self, way: str) -> TaskID | None:
        return {"live": self.live, "message-batch": self.batched}.get(way)

    def routed(self, way: str) -> None:
        self.progress.advance(self.routed_task)
        task_id = self._task(way)
        if task_id is not None:  # each half's total grows as items are routed to it
            self.progress.update(task_id, total=(self.progress.tasks[task_id].total or 0) + 1)

    def done(self, way: str) -> None:
        task_id = self._task(way)
        if task_id is not None:
            self.progress.advance(task_id)


def batch(
    input: Annotated[Path, typer.Argument(help="JSONL: one request a line (docs/batch.md).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the results go, one a line, in input order.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="tiergate.yaml")] = None,
    state: Annotated[
        Path | None, typer.Option(help="The run's state file (default: OUT.state); give it again to resume.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Live items in flight at once.")] = 16,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Requests per Message Batch.")] = 10_000,
    poll_interval: Annotated[float, typer.Option(min=0, help="Seconds between polls of the Message Batches.")] = 60,
    expired_retries: Annotated[
        int, typer.Option(min=0, help="Times an item its batch did not process (expired) is submitted again.")
    ] = 1,
    wait: Annotated[bool, typer.Option(help="Wait for the Message Batches (--no-wait: submit, exit 75).")] = True,
    dialect: Annotated[
        Dialect, typer.Option(help="The dialect of bodies that could be either (docs/batch.md).")
    ] = Dialect.OPENAI,
    key: Annotated[
        str | None, typer.Option(help="Route as this configured key (its sovereignty, default tier, ledger name).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Route every request of INPUT like a live one: the open tier answers with bounded concurrency, Claude's
    share goes through Anthropic's Message Batches at half price. Every item is in the ledger; the results are
    written to OUT in input order. Interrupted (even killed), the same command resumes where it was."""
    if not input.is_file():
        fail(f"{input}: no such file", code=2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = BatchOptions(
        input=input,
        output=out,
        state=state,
        concurrency=concurrency,
        batch_size=batch_size,
        poll_interval_s=poll_interval,
        expired_retries=expired_retries,
        wait=wait,
        dialect=dialect,
        key=key,
    )
    console = Console(stderr=True)
    bar = Bar(console, enabled=not quiet)
    try:
        cfg = load_config(config)
        with bar.progress:
            report = asyncio.run(run_batch(cfg, options, bar))
    except ConfigError as exc:
        fail(exc.message, code=2)
    except TiergateError as exc:  # Message Batches refused outright (a bad key, no permission)
        fail(f"{exc.message}; fix it and run the same command again (state: {options.state_path})", code=1)
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), code=2)
    except KeyboardInterrupt:
        fail(f"interrupted; run the same command again to resume (state: {options.state_path})", code=130)
    _show(report, options, Console())
    if report.output is None:
        typer.echo(
            f"{report.pending:,} items are still in Message Batches; run the same command again to collect them "
            f"(state: {options.state_path})",
            err=True,
        )
        raise typer.Exit(PENDING_EXIT)


def _show(report: Report, options: BatchOptions, console: Console) -> None:
    table = Table(title=f"tiergate batch {report.run}", title_justify="left", show_header=False)
    table.add_row("Items", f"{report.items:,}")
    ways = report.ways
    table.add_row(
        "Routed",
        f"live {ways['live']:,} · message batches {ways['message-batch']:,} · "
        f"refused {ways['refused']:,} · failed {ways['failed']:,}",
    )
    outcomes = " · ".join(f"{k} {v:,}" for k, v in sorted(report.outcomes.items())) or "-"
    table.add_row("Outcomes", outcomes)
    table.add_row("Cost", f"${report.cost_usd:,.6f}")
    saving = report.reference_usd - report.cost_usd
    pct = f" ({100 * saving / report.reference_usd:.1f}%)" if report.reference_usd > 0 else ""
    table.add_row("All-Claude (Message Batches)", f"${report.reference_usd:,.6f}")
    table.add_row("Saving", f"${saving:,.6f}{pct}")
    if report.batches:
        table.add_row("Message Batches", ", ".join(report.batches[:4]) + (" ..." if len(report.batches) > 4 else ""))
    table.add_row("Output", str(report.output) if report.output else f"not yet (state: {options.state_path})")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
