"""``tiergate serve``: run the gateway."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from tiergate.config import Config, load_config
from tiergate.errors import ConfigError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(config_path: Path | None, host: str | None, port: int | None) -> Config:
    """Explicit arguments, then environment, then the file, then defaults."""
    config = load_config(config_path)
    host = host or os.environ.get("TIERGATE_HOST") or config.server.host
    env_port = os.environ.get("TIERGATE_PORT")
    if port is None and env_port:
        if not env_port.isdigit():
            raise ConfigError(f"TIERGATE_PORT={env_port!r} is not a port number")
        port = int(env_port)
    server = config.server.model_copy(update={"host": host, "port": port if port is not None else config.server.port})
    config = config.model_copy(update={"server": server})
    if not config.keys and not _is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without API keys; configure 'keys' in tiergate.yaml or use 127.0.0.1"
        )
    return config


def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """SIGTERM: stop accepting, finish in-flight requests (up to the grace period), flush, exit 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # uvicorn re-raises the captured signal after shutting down; for a graceful SIGTERM the
                # process managers we run under expect a plain exit 0 instead.
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    return GracefulServer


def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="tiergate.yaml (default: $TIERGATE_CONFIG)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8787).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the gateway (with no configuration: the embedded open-weight model, on 127.0.0.1:8787)."""
    import uvicorn

    from tiergate.api import create_app

    try:
        cfg = resolve(config, host, port)
        app = create_app(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        typer.echo(f"tiergate: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server_config = uvicorn.Config(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(cfg.server.shutdown_grace_s),
        access_log=False,
        # uvloop and httptools (dependencies) where installed, else asyncio and h11: spelled out because every
        # upstream attempt, retry and backoff sleep runs on this loop.
        loop="auto",
        http="auto",
    )
    _graceful_server_class()(server_config).run()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
