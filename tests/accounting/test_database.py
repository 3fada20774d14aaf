"""Ledger URLs as users write them, mapped to the async drivers; wrong ones fail with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.accounting.database import async_url, describe, sqlite_path
from tiergate.errors import ConfigError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///tiergate.db", "sqlite+aiosqlite:///tiergate.db"),
        ("sqlite:////var/lib/tiergate/ledger.db", "sqlite+aiosqlite:////var/lib/tiergate/ledger.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql://gw:pw@db:5432/ledger", "postgresql+asyncpg://gw:pw@db:5432/ledger"),
        ("postgres://gw@db/ledger", "postgresql+asyncpg://gw@db/ledger"),
        ("postgresql+asyncpg://gw@db/ledger", "postgresql+asyncpg://gw@db/ledger"),
    ],
)
def test_async_url(given: str, expected: str) -> None:
    assert async_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("mysql://db/x", "ledger.url: unsupported database 'mysql'; use sqlite:///FILE or postgresql+asyncpg://"),
        ("postgresql+psycopg2://db/x", "unsupported database 'postgresql+psycopg2'"),
        ("tiergate.db", "ledger.url: 'tiergate.db' is not a database URL; use sqlite:///tiergate.db"),
    ],
)
def test_wrong_urls(given: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        async_url(given)
    assert message in err.value.message


def test_describe_hides_the_password() -> None:
    assert describe("postgresql://gw:secret@db/ledger") == "postgresql+asyncpg://gw:***@db/ledger"


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:///data/t.db") == Path("data/t.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://db/x") is None
