"""Read a gateway's ledger from a test (another process or thread writes it)."""

from __future__ import annotations

import asyncio
import time

from tiergate.accounting.ledger import Ledger
from tiergate.accounting.schema import AttemptRow, LedgerRow


async def rows_of(url: str) -> list[LedgerRow]:
    ledger = Ledger(url)
    await ledger.start(writer=False)
    try:
        return await ledger.rows()
    finally:
        await ledger.close()


def read_rows(url: str) -> list[LedgerRow]:
    return asyncio.run(rows_of(url))


def wait_rows(url: str, request_ids: set[str], timeout: float = 3.0) -> dict[str, LedgerRow]:
    """The rows of ``request_ids``, waiting for the writer's next flush(es)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {r.request_id: r for r in read_rows(url) if r.request_id in request_ids}
        if len(rows) == len(request_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


async def attempts_of(url: str, request_id: str) -> list[AttemptRow]:
    ledger = Ledger(url)
    await ledger.start(writer=False)
    try:
        return await ledger.attempts(request_id)
    finally:
        await ledger.close()


def wait_attempts(url: str, request_id: str, timeout: float = 5.0) -> list[AttemptRow]:
    """The attempts of ``request_id`` once its row is written (they are written in the same transaction)."""
    wait_rows(url, {request_id}, timeout)
    return asyncio.run(attempts_of(url, request_id))
