"""The ``tiergate`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from tiergate.cli import batch, doctor, plan, report, route, serve
from tiergate.cli.guard import guard_app
from tiergate.cli.keys import keys_app
from tiergate.cli.router import router_app


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="tiergate",
        help="A hybrid LLM gateway: open-weight models and Claude behind one OpenAI- and Anthropic-compatible API.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (serve, route, plan, report, doctor, batch):
        module.register(app)
    app.add_typer(router_app, name="router", help="Train, score, evaluate and calibrate the router.")
    app.add_typer(guard_app, name="guard", help="Train, score and evaluate the safety guard.")
    app.add_typer(keys_app, name="keys", help="Revoke keys and change their limits on every replica (Redis).")
    return app


def main() -> None:
    build_app()()
