"""The state of one batch run, on disk (SQLite): what was routed, submitted and answered, so that a run killed at
any point resumes where it was and writes every result once, in input order.

Nothing of the run is held in memory: an item is a row (where its line is in the input, where it went, its
output line once done); a *chunk* is a group of items bound for one Message Batch. A chunk is ``open`` while
items join it, ``submitting`` from just before its batch is created until the batch id is recorded (a run
killed in between finds its batch again by listing them: :mod:`tiergate.batch.runner`), ``submitted`` until
its results are read, then ``fetched``.

Each item's ledger row is stored with its output (``ledgered = 0``) and marked once the ledger has it, so a
row is written exactly once even across a kill (the runner looks up rows of unmarked items before writing).

Writes go to one connection; :meth:`Store.commit` ends a transaction (the runner commits at checkpoints).
SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process being killed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate.errors import ConfigError
from tiergate.types import JSON

__all__ = ["Chunk", "ItemRow", "Store"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,          -- the item's place in the input (0-based, blank lines skipped)
    line INTEGER NOT NULL,            -- its line number
    offset INTEGER NOT NULL,          -- where its line starts in the input, in bytes
    custom_id TEXT NOT NULL,
    dialect TEXT NOT NULL,
    way TEXT NOT NULL,                -- live | message-batch | refused | failed
    tier TEXT,
    backend TEXT,
    route TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',   -- the model the item asked for (the ledger's ``model``)
    chunk INTEGER,                    -- message-batch items: the chunk they were last submitted in
    attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT,                      -- message-batch items: the Messages API params, until they are done
    done INTEGER NOT NULL DEFAULT 0,
    output TEXT,                      -- the output line, once done
    ledger_row TEXT,                  -- the ledger row, once done
    ledgered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_chunk ON items (chunk, done);
CREATE INDEX IF NOT EXISTS items_todo ON items (done, way);
CREATE INDEX IF NOT EXISTS items_unledgered ON items (done, ledgered);
CREATE TABLE IF NOT EXISTS custom_ids (custom_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    backend TEXT NOT NULL,
    state TEXT NOT NULL,              -- open | submitting | submitted | fetched
    size INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    submitted_at REAL
);
"""


@dataclass(frozen=True, slots=True)
class ItemRow:
    """What the store keeps of one item (``output`` and ``ledger_row`` once done)."""

    idx: int
    line: int
    offset: int
    custom_id: str
    dialect: str
    way: str
    tier: str | None
    backend: str | None
    route: str
    chunk: int | None
    attempts: int
    done: bool
    model: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    id: int
    backend: str
    state: str
    size: int
    bytes: int
    batch_id: str | None
    submitted_at: float | None


_ITEM_COLUMNS = "idx, line, offset, custom_id, dialect, way, tier, backend, route, chunk, attempts, done, model"


def _item(row: tuple[Any, ...]) -> ItemRow:
    idx, line, offset, custom_id, dialect, way, tier, backend, route, chunk, attempts, done, model = row
    return ItemRow(idx, line, offset, custom_id, dialect, way, tier, backend, route, chunk, attempts, bool(done), model)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level="DEFERRED")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: not a tiergate batch state file ({exc})") from None

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def commit(self) -> None:
        self._db.commit()

    # -- the run -----------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: str | int) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    # -- items -------------------------------------------------------------------------------------

    def claim_custom_id(self, custom_id: str) -> bool:
        """Record ``custom_id``; ``False`` when an earlier item of the input has it already."""
        cursor = self._db.execute("INSERT OR IGNORE INTO custom_ids (custom_id) VALUES (?)", (custom_id,))
        return cursor.rowcount == 1

    def add_item(self, row: ItemRow, params: str | None = None) -> None:
        self._db.execute(
            f"INSERT INTO items ({_ITEM_COLUMNS}, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.idx,
                row.line,
                row.offset,
                row.custom_id,
                row.dialect,
                row.way,
                row.tier,
                row.backend,
                row.route,
                row.chunk,
                row.attempts,
                int(row.done),
                row.model,
                params,
            ),
        )

    def item(self, idx: int) -> ItemRow | None:
        found = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE idx = ?", (idx,)).fetchone()
        return None if found is None else _item(found)

    def params(self, idx: int) -> str | None:
        """The Messages API params of a message-batch item not done yet."""
        found = self._db.execute("SELECT params FROM items WHERE idx = ?", (idx,)).fetchone()
        return None if found is None else found[0]

    def finish(self, idx: int, output: JSON, ledger_row: JSON | None) -> None:
        """The item is done: its output line and ledger row are kept, its params dropped."""
        self._db.execute(
            "UPDATE items SET done = 1, params = NULL, output = ?, ledger_row = ?, ledgered = ? WHERE idx = ?",
            (json.dumps(output, separators=(",", ":")), _dumps(ledger_row), int(ledger_row is None), idx),
        )

    def live_todo(self) -> list[ItemRow]:
        """Live items not done (a run killed while they were in flight, or before its last checkpoint), in input order.
        A list, not a cursor: they are dispatched, and marked done, while it is read."""
        query = f"SELECT {_ITEM_COLUMNS} FROM items WHERE done = 0 AND way = 'live' ORDER BY idx"
        return [_item(r) for r in self._db.execute(query).fetchall()]

    def unledgered(self, limit: int = 1000) -> list[tuple[int, JSON]]:
        rows = self._db.execute(
            "SELECT idx, ledger_row FROM items WHERE done = 1 AND ledgered = 0 ORDER BY idx LIMIT ?", (limit,)
        ).fetchall()
        return [(idx, json.loads(row)) for idx, row in rows]

    def mark_ledgered(self, idxs: Iterable[int]) -> None:
        self._db.executemany("UPDATE items SET ledgered = 1 WHERE idx = ?", [(i,) for i in idxs])

    def outputs(self) -> Iterator[str]:
        """Every item's output line, in input order (items not done are skipped: check :meth:`counts`)."""
        return (r[0] for r in self._db.execute("SELECT output FROM items WHERE done = 1 ORDER BY idx"))

    def counts(self) -> dict[str, int]:
        """Items by ``way`` and whether done: ``{"live": n, "live_done": n, ...}`` and ``items``."""
        out = {"items": 0}
        for way, done, n in self._db.execute("SELECT way, done, COUNT(*) FROM items GROUP BY way, done"):
            out[way] = out.get(way, 0) + n
            out["items"] += n
            if done:
                out[f"{way}_done"] = out.get(f"{way}_done", 0) + n
        return out

    def outcomes(self) -> dict[str, int]:
        """Done items by the outcome their output line records (``succeeded``, ``errored``, ...)."""
        query = "SELECT json_extract(output, '$.tiergate.outcome'), COUNT(*) FROM items WHERE done = 1 GROUP BY 1"
        return {str(k): n for k, n in self._db.execute(query)}

    def spent(self) -> tuple[float, float]:
        """(cost, the reference model's cost at the batch price) of the done items' ledger rows."""
        query = (
            "SELECT TOTAL(json_extract(ledger_row, '$.cost_usd')), "
            "TOTAL(json_extract(ledger_row, '$.counterfactual_usd')) FROM items WHERE done = 1"
        )
        cost, reference = self._db.execute(query).fetchone()
        return float(cost), float(reference)

    # -- chunks ------------------------------------------------------------------------------------

    def open_chunk(self, backend: str) -> Chunk:
        """The chunk items bound for ``backend``'s Message Batches join now (a new one if none is open)."""
        found = self._db.execute(
            "SELECT * FROM chunks WHERE backend = ? AND state = 'open' ORDER BY id LIMIT 1", (backend,)
        ).fetchone()
        if found is not None:
            return Chunk(*found)
        cursor = self._db.execute("INSERT INTO chunks (backend, state) VALUES (?, 'open')", (backend,))
        assert cursor.lastrowid is not None
        return Chunk(cursor.lastrowid, backend, "open", 0, 0, None, None)

    def join_chunk(self, idx: int, chunk: int, size: int) -> None:
        """Item ``idx`` (whose params are ``size`` bytes) joins ``chunk`` (again, after an expiry)."""
        self._db.execute("UPDATE items SET chunk = ?, attempts = attempts + 1 WHERE idx = ?", (chunk, idx))
        self._db.execute("UPDATE chunks SET size = size + 1, bytes = bytes + ? WHERE id = ?", (size, chunk))

    def chunks(self, *states: str) -> list[Chunk]:
        marks = ", ".join("?" for _ in states)
        rows = self._db.execute(f"SELECT * FROM chunks WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        return [Chunk(*r) for r in rows]

    def chunk(self, chunk_id: int) -> Chunk:
        return Chunk(*self._db.execute("SELECT * FROM chunks WHERE id = ?", (chunk_id,)).fetchone())

    def claimed_batches(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT batch_id FROM chunks WHERE batch_id IS NOT NULL")}

    def set_chunk(self, chunk_id: int, state: str, batch_id: str | None = None) -> None:
        if state == "submitting":
            self._db.execute(
                "UPDATE chunks SET state = ?, submitted_at = ? WHERE id = ?", (state, time.time(), chunk_id)
            )
        elif batch_id is not None:
            self._db.execute("UPDATE chunks SET state = ?, batch_id = ? WHERE id = ?", (state, batch_id, chunk_id))
        else:
            self._db.execute("UPDATE chunks SET state = ? WHERE id = ?", (state, chunk_id))

    def chunk_requests(self, chunk_id: int) -> Iterator[tuple[int, str]]:
        """(idx, params) of the chunk's items not done, in input order."""
        query = "SELECT idx, params FROM items WHERE chunk = ? AND done = 0 ORDER BY idx"
        return iter(self._db.execute(query, (chunk_id,)).fetchall())

    def chunk_todo(self, chunk_id: int) -> list[int]:
        """The chunk's items not done yet."""
        rows = self._db.execute("SELECT idx FROM items WHERE chunk = ? AND done = 0", (chunk_id,)).fetchall()
        return [r[0] for r in rows]


def _dumps(value: JSON | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)
