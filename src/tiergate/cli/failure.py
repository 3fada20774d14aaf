"""How every command fails: one line on stderr, ``error: ...``, and a non-zero exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from tiergate.errors import ConfigError

#: What a serving-only install runs to get the training code's dependencies.
TRAIN_EXTRA = "pip install 'tiergate[train]'"


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Bad data, bad configuration and unreadable files end the command with one line, not a traceback."""
    try:
        yield
    except (ValueError, ConfigError) as exc:  # DataError is a ValueError
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


@contextmanager
def training() -> Iterator[None]:
    """Around the commands that import the training code (:mod:`tiergate.train`, imported inside them, never
    when the CLI starts): a dependency it cannot import ends the command with the line that installs the
    ``[train]`` extra, exit 2, not a traceback."""
    try:
        yield
    except ImportError as exc:
        fail(f"this command needs the training extra ({exc}); install it with: {TRAIN_EXTRA}", code=2)
