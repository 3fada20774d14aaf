"""``tiergate keys``: revoke a key or change its limits on every replica at once, through Redis.

Usage::

    tiergate keys show                                   # each key: limits (file, override), spend this month
    tiergate keys revoke hr-app                          # 401 on every replica within a second
    tiergate keys restore hr-app
    tiergate keys set hr-app --budget-usd-per-month 200 --requests-per-minute none   # none: remove that limit
    tiergate keys clear hr-app                           # back to tiergate.yaml

The keys themselves (names, secrets) stay in ``tiergate.yaml``; these commands need ``redis:`` (or
``$TIERGATE_REDIS_URL``), the store every replica reads its key changes from.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from tiergate.accounting.budgets import Limits
from tiergate.cli.failure import fail
from tiergate.config import Config, load_config
from tiergate.errors import ConfigError
from tiergate.limits.keys import KeyOverride, KeyStore
from tiergate.limits.scripts import key_names

__all__ = ["keys_app"]

keys_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
T = TypeVar("T")
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="tiergate.yaml (default: $TIERGATE_CONFIG)")]
NameArgument = Annotated[str, typer.Argument(help="The key's name in tiergate.yaml.")]


def _run(config_path: Path | None, name: str | None, work: Callable[[Config, KeyStore, Redis], Awaitable[T]]) -> T:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(exc.message, code=2)
    if config.redis is None:
        fail("key changes at run time go through Redis: set redis.url in tiergate.yaml or TIERGATE_REDIS_URL", 2)
    if name is not None and name not in {k.name for k in config.keys}:
        known = ", ".join(k.name for k in config.keys) or "none"
        fail(f"no key named {name!r} in the configuration (keys: {known})", code=2)
    redis_config = config.redis

    async def go() -> T:
        client = Redis.from_url(redis_config.url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
        try:
            return await work(config, KeyStore(client, redis_config.prefix), client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except RedisError as exc:
        fail(f"Redis at {redis_config.url.split('@')[-1]} did not answer: {exc}")


def _merge(current: KeyOverride | None, **changes: Any) -> KeyOverride:
    given = current.model_dump(exclude_unset=True) if current is not None else {}
    try:
        return KeyOverride.model_validate({**given, **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", code=2)


def _change(config_path: Path | None, name: str, **changes: Any) -> None:
    async def work(config: Config, store: KeyStore, client: Redis) -> int:
        override = _merge(await store.get(name), **changes)
        if override.model_fields_set <= {"revoked"} and not override.revoked:
            return await store.clear(name)  # nothing left over the file
        return await store.change(name, override)

    version = _run(config_path, name, work)
    typer.echo(f"key {name!r}: changed (version {version}); every replica applies it within a second")


@keys_app.command()
def revoke(name: NameArgument, config: ConfigOption = None) -> None:
    """Refuse the key (401) on every replica, until 'restore'."""
    _change(config, name, revoked=True)


@keys_app.command()
def restore(name: NameArgument, config: ConfigOption = None) -> None:
    """Accept a revoked key again."""
    _change(config, name, revoked=False)


def _limit(value: str | None, cast: Callable[[str], float | int], option: str) -> dict[str, float | int | None]:
    if value is None:
        return {}
    if value.lower() == "none":
        return {option: None}
    try:
        return {option: cast(value)}
    except ValueError:
        fail(f"--{option.replace('_', '-')}: {value!r} is not a number (or 'none' to remove the limit)", code=2)


@keys_app.command("set")
def set_limits(
    name: NameArgument,
    budget_usd_per_month: Annotated[str | None, typer.Option(help="USD a month, or 'none'.")] = None,
    requests_per_minute: Annotated[str | None, typer.Option(help="Requests a minute, or 'none'.")] = None,
    tokens_per_minute: Annotated[str | None, typer.Option(help="Tokens a minute, or 'none'.")] = None,
    over_budget: Annotated[str | None, typer.Option(help="reject or downgrade.")] = None,
    config: ConfigOption = None,
) -> None:
    """Override limits of a key over tiergate.yaml, on every replica (options left out keep their value)."""
    changes: dict[str, Any] = {
        **_limit(budget_usd_per_month, float, "budget_usd_per_month"),
        **_limit(requests_per_minute, int, "requests_per_minute"),
        **_limit(tokens_per_minute, int, "tokens_per_minute"),
    }
    if over_budget is not None:
        changes["over_budget"] = over_budget
    if not changes:
        fail("nothing to change: give at least one of the options (see --help)", code=2)
    _change(config, name, **changes)


@keys_app.command()
def clear(name: NameArgument, config: ConfigOption = None) -> None:
    """Drop every override of the key: back to tiergate.yaml (a revoked key is accepted again)."""

    async def work(config: Config, store: KeyStore, client: Redis) -> int:
        return await store.clear(name)

    version = _run(config, name, work)
    typer.echo(f"key {name!r}: back to the configuration file (version {version})")


def _describe(lim: Limits) -> str:
    parts = []
    if lim.budget_usd_per_month is not None:
        parts.append(f"${lim.budget_usd_per_month:g}/month ({lim.over_budget})")
    if lim.requests_per_minute is not None:
        parts.append(f"{lim.requests_per_minute} req/min")
    if lim.tokens_per_minute is not None:
        parts.append(f"{lim.tokens_per_minute} tok/min")
    return ", ".join(parts) or "none"


@keys_app.command()
def show(
    config: ConfigOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
) -> None:
    """Each key: its limits in force (the file's, with the overrides in Redis), revoked or not, and its spend
    and reservations this month as Redis has them."""

    async def work(cfg: Config, store: KeyStore, client: Redis) -> list[dict[str, Any]]:
        assert cfg.redis is not None
        version, overrides = await store.load()
        rows = []
        for key in cfg.keys:
            override = overrides.get(key.name)
            lim = override.apply(Limits.of(key)) if override is not None else Limits.of(key)
            account = await client.hgetall(key_names(cfg.redis.prefix, key.name)[0])
            rows.append(
                {
                    "name": key.name,
                    "revoked": override is not None and override.revoked,
                    "limits": _describe(lim),
                    "override": override.model_dump(exclude_unset=True) if override is not None else None,
                    "month": account.get("month"),
                    "spent_usd": float(account.get("spent", 0.0)),
                    "reserved_usd": float(account.get("reserved", 0.0)),
                    "version": version,
                }
            )
        return rows

    rows = _run(config, None, work)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("key", "state", "limits in force", "override", "month", "spent", "held")
    for row in rows:
        table.add_row(
            row["name"],
            "revoked" if row["revoked"] else "active",
            row["limits"],
            json.dumps(row["override"]) if row["override"] else "-",
            row["month"] or "-",
            f"${row['spent_usd']:.4f}",
            f"${row['reserved_usd']:.4f}",
        )
    Console().print(table)
