"""The ``tiergate`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from tiergate.cli import plan, serve


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="tiergate",
        help="A hybrid LLM gateway: open-weight models and Claude behind one OpenAI- and Anthropic-compatible API.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    serve.register(app)
    plan.register(app)
    try:
        from tiergate.cli.router import router_app
    except ImportError:  # pragma: no cover - the router tools are part of the package
        pass
    else:
        app.add_typer(router_app, name="router", help="Train, score, evaluate and calibrate the router.")
    return app


def main() -> None:
    build_app()()
