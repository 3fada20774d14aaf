"""The ledger's database: URL mapping, the async engine (SQLite in WAL mode, or PostgreSQL) and migrations.

>>> async_url("sqlite:///tiergate.db")
'sqlite+aiosqlite:///tiergate.db'
>>> async_url("postgresql://gw@db/ledger")
'postgresql+asyncpg://gw@db/ledger'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from tiergate.errors import ConfigError

__all__ = ["async_url", "connect", "describe", "has_ledger", "migrate", "sqlite_path"]

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"ledger.url: {url!r} is not a database URL; use sqlite:///tiergate.db") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"ledger.url: unsupported database {parsed.drivername!r}; use sqlite:///FILE or postgresql+asyncpg://..."
        )
    return parsed.set(drivername=driver)


def async_url(url: str) -> str:
    """The SQLAlchemy async URL for a ledger URL as users write it (``sqlite:///``, ``postgresql://``)."""
    parsed = _parse(url)
    return parsed.drivername + url[url.index(":") :]


def describe(url: str) -> str:
    """The URL with its password masked, for messages."""
    parsed = _parse(url)
    return parsed.render_as_string(hide_password=True) if parsed.password else async_url(url)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite ledger; ``None`` for PostgreSQL and in-memory SQLite."""
    parsed = _parse(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def connect(url: str) -> AsyncEngine:
    """An engine for ``url``. SQLite files run in WAL mode with ``synchronous=NORMAL``: a commit survives the
    process being killed, and readers (``tiergate report``) never block the gateway's writer."""
    parsed = _parse(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_async_engine(parsed, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):  # one shared connection, or every session sees its own database
        return create_async_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_async_engine(parsed, connect_args={"timeout": 30})
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision``, the newest by default (creating it on an empty database)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def has_ledger(engine: AsyncEngine) -> bool:
    """Whether the database holds a ledger (for readers, which must not create one)."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: inspect(c).has_table("requests"))
