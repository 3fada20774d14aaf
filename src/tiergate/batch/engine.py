"""Routing and accounting for a distributed engine's workers (Ray Data, Spark, Dask): plain synchronous calls.

One :class:`BatchRouter` per worker (a Ray Data callable class builds it in its constructor). It routes a line
of the batch file exactly as ``tiergate batch`` and the gateway do (:func:`~tiergate.batch.route_item`: hard
policy, rules, the router) and gives the request as the chosen backend must receive it, so the engine can serve
the open half itself (vLLM) and hand the closed half to ``tiergate batch`` or Message Batches; then it prices
what was served and writes the ledger rows, as ``tiergate batch`` would (offline work, one run id).

    router = BatchRouter("tiergate.yaml", run="tgb-nightly-0412")
    routed = router.route('{"custom_id": "t-1", "body": {"model": "auto", "messages": [...]}}')
    routed["way"], routed["tier"], routed["request"]     # 'live', 'open', {"model": ..., "messages": [...]}
    row = router.account(routed, {"input_tokens": 812, "output_tokens": 64}, elapsed_s=0.4)
    router.record([row])                                 # into the configuration's ledger
    router.close()
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tiergate.accounting.schema import requests as ledger_table
from tiergate.backends import openai_compat
from tiergate.batch.books import BatchBooks, row_from_json, row_to_json
from tiergate.batch.items import parse_line
from tiergate.batch.route import BATCH_CALLER, message_batch_params, outbound, route_item
from tiergate.config import Config, load_config
from tiergate.pipeline.build import build_gateway
from tiergate.pipeline.gateway import Caller
from tiergate.types import JSON, Dialect, Usage

__all__ = ["BatchRouter"]


class BatchRouter:
    """``config``: a :class:`Config`, a ``tiergate.yaml`` path, or ``None`` (``$TIERGATE_CONFIG`` / the default).
    ``run``: the id the ledger rows carry in ``batch`` (one per job; a new one when not given)."""

    def __init__(
        self, config: Config | str | Path | None = None, *, run: str | None = None, caller: Caller = BATCH_CALLER
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.run = run or f"tgb-{uuid.uuid4().hex[:12]}"
        self.caller = caller
        self._loop = asyncio.new_event_loop()
        self.gateway = build_gateway(self.config)
        self._loop.run_until_complete(self.gateway.load_encoder())
        self.books = BatchBooks.build(self.config, self.gateway.pool, self.run, caller)
        self._ledger_started = False

    def close(self) -> None:
        if self._ledger_started:
            self._loop.run_until_complete(self.books.ledger.close())
        self.gateway.close_encoder()
        self._loop.close()

    def route(self, line: str | bytes | Mapping[str, Any], index: int = 0) -> JSON:
        """Route one line of the batch file (text, or the parsed object). The answer is plain JSON:
        ``custom_id``, ``dialect``, ``way`` (``live`` | ``message-batch`` | ``refused`` | ``failed``), ``tier``,
        ``backend`` (the first the plan would try), ``route``, ``sovereign``, ``model``, ``error`` and ``request``:
        the body to send (OpenAI Chat Completions for an OpenAI-compatible backend such as vLLM, the Messages
        API params for Claude), redacted where the policy redacts for that backend; ``None`` for refused and
        failed items."""
        raw = line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
        item = parse_line(raw, index, index + 1)
        routed = self._loop.run_until_complete(route_item(self.gateway, item.chat, self.caller))
        if item.error is not None:
            routed.error = item.error
        request: JSON | None = None
        target = routed.target
        if item.chat is not None and target is not None and routed.way == "message-batch":
            request = message_batch_params(routed, item.chat)
        elif item.chat is not None and target is not None and routed.way == "live":
            sent, _ = outbound(routed, item.chat)
            request = openai_compat.request_json(sent, target.backend.model, False)
        return {
            "custom_id": item.custom_id,
            "dialect": item.dialect.value,
            "model": "" if item.chat is None else item.chat.model,
            **routed.to_json(),
            "request": request,
        }

    def account(
        self,
        routed: Mapping[str, Any],
        usage: Mapping[str, int] | Usage | None,
        *,
        backend: str | None = None,
        status: str = "ok",
        elapsed_s: float = 0.0,
        message_batch: bool = False,
        http_status: int = 200,
        index: int | None = None,
    ) -> JSON:
        """The ledger row of one routed item, as plain JSON (for :meth:`record`). ``usage``: the tokens it used
        (``input_tokens``, ``output_tokens``, optionally ``cache_read_tokens``, ``cache_write_tokens``; ``None``
        when nothing was served); ``backend``: who served it (default: the routed one); ``message_batch``: it
        went through Message Batches (the batch price). The request id is ``<run>-<custom_id>`` unless
        ``index`` is given (``<run>-<index>``, as ``tiergate batch`` names them)."""
        if isinstance(usage, Mapping):
            usage = Usage(
                input_tokens=int(usage.get("input_tokens", 0)),
                output_tokens=int(usage.get("output_tokens", 0)),
                cache_read_tokens=int(usage.get("cache_read_tokens", 0)),
                cache_write_tokens=int(usage.get("cache_write_tokens", 0)),
            )
        rid = f"{self.run}-{routed['custom_id'] if index is None else index}"
        row = self.books.row(
            rid[:64],
            Dialect(routed["dialect"]),
            str(routed.get("model", "")),
            tier=routed.get("tier"),
            backend=backend or routed.get("backend"),
            route=str(routed.get("route", "")),
            status="ok" if status == "ok" else "error" if status == "error" else "cancelled",
            elapsed_s=elapsed_s,
            usage=usage,
            message_batch=message_batch,
            http_status=http_status,
        )
        return row_to_json(row)

    def record(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Write rows (from :meth:`account`) into the configuration's ledger, skipping any whose request id is
        there already (a task the engine ran twice); returns how many were written."""
        return self._loop.run_until_complete(self._record([dict(r) for r in rows]))

    async def _record(self, rows: list[JSON]) -> int:
        if not self._ledger_started:
            await self.books.ledger.start()
            self._ledger_started = True
        engine = self.books.ledger.engine
        async with engine.connect() as conn:
            query = select(ledger_table.c.request_id).where(
                ledger_table.c.request_id.in_([r["request_id"] for r in rows])
            )
            there = set((await conn.execute(query)).scalars())
        fresh = [row_from_json(r) for r in rows if r["request_id"] not in there]
        if fresh:
            async with engine.begin() as conn:
                await conn.execute(ledger_table.insert(), fresh)
        return len(fresh)
