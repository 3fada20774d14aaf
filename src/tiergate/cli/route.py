"""``tiergate route "PROMPT"``: the routing decision and every reason, without calling a model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tiergate.config import load_config
from tiergate.errors import ConfigError, TiergateError
from tiergate.pipeline.build import build_gateway
from tiergate.pipeline.gateway import Caller
from tiergate.types import ChatRequest, Message


async def _decide(prompt: str, config_path: Path | None, model: str) -> dict[str, str]:
    gateway = build_gateway(load_config(config_path))
    await gateway.load_encoder(always_score=True)
    try:
        request = ChatRequest(model=model, messages=[Message.text("user", prompt)])
        plan = await gateway.plan(request, Caller())
        signals = await gateway.signals(request) if gateway.router.needs_embedding else None
        score = gateway.router.score(request, signals) if signals is not None else plan.score
    finally:
        gateway.close_encoder()
    return {
        "tier": plan.tier.value,
        "backends": ", ".join(s.name for s in plan.targets),
        "router": gateway.router.kind,
        "score": "-" if score is None else f"{score:.3f}",
        "threshold": f"{gateway.router.threshold:.3f}",
        "reasons": plan.route,
    }


def route(
    prompt: Annotated[str, typer.Argument(help="The prompt to route.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="tiergate.yaml")] = None,
    model: Annotated[str, typer.Option(help="The model name the caller would ask for.")] = "auto",
) -> None:
    """Show where PROMPT would go (tier, backends in order), the router's score, threshold and reasons."""
    try:
        decision = asyncio.run(_decide(prompt, config, model))
    except (ConfigError, TiergateError) as exc:
        typer.echo(f"tiergate: {exc}", err=True)
        raise typer.Exit(2) from None
    table = Table(show_header=False)
    for key, value in decision.items():
        table.add_row(key, value)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("route")(route)
