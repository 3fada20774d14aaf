"""``tiergate batch``: route every item of a JSONL file like a live request, dispatch the open half with bounded
concurrency and submit the closed half as Message Batches, then write every result in input order.

The run streams: the input is read line by line (each item's place in it is kept, not the item), results go
to the state store on disk (:mod:`tiergate.batch.store`) and the output is written from it at the end, so
memory stays flat whatever the number of items: at most ``concurrency`` live items and one chunk of a Message
Batch (``batch_size`` requests) are in memory at a time.

Every state change is a store transaction, committed at checkpoints (every second) and before anything
leaves the process that must not leave twice: a chunk is marked ``submitting`` and committed before its
batch is created, and its batch id committed as soon as it is known. A run killed at any point and started
again with the same state file therefore:

- routes the input from the first item it had not recorded;
- sends again the live items not committed as done: in flight (at most ``concurrency``) or answered since the
  last checkpoint (``CHECKPOINT_S``); an OpenAI-compatible server has no idempotency key; their ledger rows had
  not been written, so none is counted twice;
- never submits an item to Message Batches twice: a chunk caught ``submitting`` is looked up among the
  account's batches (:meth:`MessageBatches.find`) and adopted, or submitted only if no batch was made;
- reads the results of batches that ended meanwhile, skipping items already done;
- writes the ledger rows that had not reached the ledger, each once (looked up by request id first).

Items a batch did not process (``expired``: the batch outlived its 24 hours; or missing from its results) are
submitted again, up to ``expired_retries`` times, then reported as expired. ``errored`` items are reported
with their error (Message Batches retried them already); ``canceled`` ones as canceled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import anthropic
import httpx2
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from sqlalchemy import select

from tiergate.accounting.schema import LedgerRow, Status
from tiergate.accounting.schema import requests as ledger_table
from tiergate.backends import BackendFactory
from tiergate.backends.anthropic import parse_message
from tiergate.backends.errors import from_http_error
from tiergate.batch.books import BatchBooks, row_from_json, row_to_json
from tiergate.batch.items import BatchItem, Outcome, parse_line, render_line
from tiergate.batch.messagebatches import MessageBatches
from tiergate.batch.route import BATCH_CALLER, Routed, message_batch_params, route_item
from tiergate.batch.store import ItemRow, Store
from tiergate.config import Config
from tiergate.errors import ConfigError, InvalidRequest, TiergateError, UpstreamError
from tiergate.pipeline.build import build_gateway
from tiergate.pipeline.gateway import Caller, Gateway
from tiergate.signals.redact import Restorer
from tiergate.types import JSON, ChatResponse, Dialect, StopReason, Usage

__all__ = ["BatchOptions", "Progress", "Report", "run_batch"]

log = logging.getLogger("tiergate.batch")
POLICY_MODEL = "tiergate-policy"
#: Anthropic error types and the HTTP status each comes with.
_STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
CHECKPOINT_S = 1.0


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """One run. ``state``: the state file (default: the output's name + ``.state``)."""

    input: Path
    output: Path
    state: Path | None = None
    concurrency: int = 16
    batch_size: int = 10_000
    batch_bytes: int = 128 * 1024 * 1024
    poll_interval_s: float = 60.0
    expired_retries: int = 1
    wait: bool = True
    dialect: Dialect = Dialect.OPENAI
    key: str | None = None

    @property
    def state_path(self) -> Path:
        return self.state or self.output.with_name(self.output.name + ".state")


class Progress(Protocol):
    """What a run reports as it goes (the CLI draws it): ``start`` with the input's items and the store's
    :meth:`~tiergate.batch.store.Store.counts` (a resumed run), then each item ``routed`` one way and ``done``."""

    def start(self, total: int, counts: dict[str, int]) -> None: ...
    def routed(self, way: str) -> None: ...
    def done(self, way: str) -> None: ...


class _Quiet:
    def start(self, total: int, counts: dict[str, int]) -> None:
        pass

    def routed(self, way: str) -> None:
        pass

    def done(self, way: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Report:
    """How a run ended. ``pending``: items still in Message Batches (``--no-wait``, or interrupted);
    ``output``: the file written (``None`` until every item is done)."""

    run: str
    items: int
    ways: dict[str, int]
    outcomes: dict[str, int]
    cost_usd: float
    reference_usd: float
    pending: int
    output: Path | None
    batches: list[str] = field(default_factory=list)


class BatchError(ConfigError):
    """A run that cannot start or go on (the state file belongs to another input, a batch refused outright)."""


def fingerprint(path: Path) -> tuple[str, int, int]:
    """(sha256, size, items) of the input: one streaming pass; an item is a non-blank line."""
    digest, size, items = hashlib.sha256(), 0, 0
    with path.open("rb") as f:
        for raw in f:
            digest.update(raw)
            size += len(raw)
            items += bool(raw.strip())
    return digest.hexdigest(), size, items


class Runner:
    def __init__(
        self,
        config: Config,
        options: BatchOptions,
        gateway: Gateway,
        books: BatchBooks,
        store: Store,
        progress: Progress,
        clients: Callable[[str], MessageBatches],
    ) -> None:
        self.config = config
        self.options = options
        self.gateway = gateway
        self.books = books
        self.store = store
        self.progress = progress
        self._clients = clients
        self._opened: dict[str, MessageBatches] = {}
        self._slots = asyncio.Semaphore(options.concurrency)
        self._live: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        #: A ledger write may have been cut (a kill before this run, a cancel in it): look rows up before writing.
        self._uncertain = True
        #: Chunks whose create got no answer in this run, and when: looked up one poll interval later.
        self._in_doubt: dict[int, float] = {}
        self._reader: IO[bytes] = options.input.open("rb")
        self.run = books.run

    # -- the run -------------------------------------------------------------------------------------------

    async def execute(self) -> Report:
        checkpoints = asyncio.create_task(self._checkpoints())  # stopped, never cancelled: see checkpoint()
        try:
            await self.checkpoint()  # rows of items done before an interruption that may not be in the ledger
            for chunk in self.store.chunks("submitting"):  # the run before was killed while creating them
                await self._reconcile(chunk.id)
            for row in self.store.live_todo():  # ... or while these were in flight
                await self._slots.acquire()
                self._spawn(self._load(row), row)
            await self._ingest()
            await self._drain()
            await self._submit_open()
            await self._poll(wait=self.options.wait)
        finally:
            self._stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
            await self._drain_cancelled()
            await self.checkpoint()
        return self._report()

    async def close(self) -> None:
        self._reader.close()
        await asyncio.gather(*(c.close() for c in self._opened.values()), return_exceptions=True)

    def _report(self) -> Report:
        counts = self.store.counts()
        total = int(self.store.meta()["items"])
        done = sum(counts.get(f"{w}_done", 0) for w in ("live", "message-batch", "refused", "failed"))
        output = None
        if done == total and self.store.meta().get("ingested") == "1":
            self._write_output()
            output = self.options.output
        cost, reference = self.store.spent()
        ways = {w: counts.get(w, 0) for w in ("live", "message-batch", "refused", "failed")}
        pending = counts.get("message-batch", 0) - counts.get("message-batch_done", 0)
        batches = [c.batch_id for c in self.store.chunks("submitted", "fetched") if c.batch_id]
        return Report(self.run, total, ways, self.store.outcomes(), cost, reference, pending, output, batches)

    def _write_output(self) -> None:
        out = self.options.output
        part = out.with_name(out.name + ".part")
        with part.open("w", encoding="utf-8") as f:
            for line in self.store.outputs():
                f.write(line)
                f.write("\n")
        os.replace(part, out)

    # -- routing the input ---------------------------------------------------------------------------------

    async def _ingest(self) -> None:
        meta = self.store.meta()
        if meta.get("ingested") == "1":
            return
        offset, index, line = int(meta["next_offset"]), int(meta["next_index"]), int(meta["next_line"])
        with self.options.input.open("rb") as f:
            f.seek(offset)
            for raw in f:
                if raw.strip():
                    await self._take(raw, index, line, offset)
                    index += 1
                else:
                    self.store.set_meta(next_offset=offset + len(raw), next_index=index, next_line=line + 1)
                offset, line = offset + len(raw), line + 1
        self.store.set_meta(ingested=1)

    async def _take(self, raw: bytes, index: int, line: int, offset: int) -> None:
        """Route one item and record it with the input's next position (one state change, see below)."""
        item = parse_line(raw, index, line, self.options.dialect, self.config.server.max_tokens_limit)
        routed = await route_item(self.gateway, item.chat, self.books.caller)
        if item.error is not None:
            routed = Routed("failed", error=item.error)
        if routed.way == "live":
            await self._slots.acquire()
        # From here on, no await until the item is recorded: the item, its custom_id and the input's next
        # offset change together at the next commit (a kill between them would route the item twice).
        if not self.store.claim_custom_id(item.custom_id):
            if routed.way == "live":
                self._slots.release()
            duplicate = InvalidRequest(f"line {line}: custom_id {item.custom_id!r} is used by an earlier line")
            routed = Routed("failed", error=duplicate)  # bad input: no plan, as live
        target = routed.target
        row = ItemRow(
            idx=index,
            line=line,
            offset=offset,
            custom_id=item.custom_id,
            dialect=item.dialect.value,
            way=routed.way,
            tier=routed.tier,
            backend=None if target is None else target.name,
            route=routed.route,
            chunk=None,
            attempts=0,
            done=False,
            model="" if item.chat is None else item.chat.model,
        )
        full: int | None = None
        if routed.way == "message-batch":
            assert item.chat is not None
            assert target is not None
            params = json.dumps(message_batch_params(routed, item.chat), separators=(",", ":"))
            self.store.add_item(row, params)
            full = self._join(index, target.name, len(params))
        else:
            self.store.add_item(row)
        self.store.set_meta(next_offset=offset + len(raw), next_index=index + 1, next_line=line + 1)
        self.progress.routed(routed.way)
        if routed.way == "live":
            self._spawn(item, row, routed)
        elif routed.way in ("refused", "failed"):
            self._finish_now(item, row, routed)
        if full is not None:
            await self._submit(full)

    def _join(self, idx: int, backend: str, size: int) -> int | None:
        """Put item ``idx`` in the open chunk for ``backend``; the chunk's id when it is now full."""
        chunk = self.store.open_chunk(backend)
        self.store.join_chunk(idx, chunk.id, size)
        if chunk.size + 1 >= self.options.batch_size or chunk.bytes + size >= self.options.batch_bytes:
            return chunk.id
        return None

    def _load(self, row: ItemRow) -> BatchItem:
        """The item of a stored row, read again from the input."""
        self._reader.seek(row.offset)
        raw = self._reader.readline()
        return parse_line(raw, row.idx, row.line, self.options.dialect, self.config.server.max_tokens_limit)

    def _finish_now(self, item: BatchItem, row: ItemRow, routed: Routed) -> None:
        """A refused or failed item: its answer is known without a backend."""
        rid = self._request_id(row.idx)
        if routed.way == "refused":
            assert routed.plan is not None
            assert routed.plan.refusal is not None
            refusal = ChatResponse(rid, POLICY_MODEL, [], StopReason.REFUSAL, Usage(), refusal=routed.plan.refusal)
            ledger = self.books.row(
                rid,
                item.dialect,
                row.model,
                tier=row.tier,
                backend=None,
                route=row.route,
                status="refused",
                elapsed_s=0.0,
            )
            self._done(item, row, "succeeded", ledger, response=refusal, outcome="refused")
            return
        error = routed.error or InvalidRequest("not a request")
        ledger = self.books.row(
            rid,
            item.dialect,
            row.model,
            tier=row.tier if routed.plan else None,
            backend=None,
            route=row.route,
            status="error",
            elapsed_s=0.0,
            http_status=error.status,
        )
        self._done(item, row, "errored", ledger, error=error)

    # -- the live half -------------------------------------------------------------------------------------

    def _spawn(self, item: BatchItem, row: ItemRow, routed: Routed | None = None) -> None:
        task = asyncio.create_task(self._dispatch(item, row, routed))
        self._live.add(task)
        task.add_done_callback(self._live.discard)

    async def _dispatch(self, item: BatchItem, row: ItemRow, routed: Routed | None) -> None:
        started = time.perf_counter()
        try:
            if routed is None:  # resumed: route it again (same input, same configuration: same plan)
                routed = await route_item(self.gateway, item.chat, self.books.caller)
            if routed.plan is None or item.chat is None:
                self._finish_now(item, row, routed)
                return
            rid = self._request_id(row.idx)
            try:
                response, served = await self.gateway.complete(item.chat, routed.plan)
            except TiergateError as exc:
                backend = exc.backend if isinstance(exc, UpstreamError) and exc.backend else None
                state = self.gateway.pool.get(backend) if backend else None
                ledger = self.books.row(
                    rid,
                    item.dialect,
                    row.model,
                    tier=state.config.tier.value if state else row.tier,
                    backend=backend,
                    route=routed.route,
                    status="error",
                    elapsed_s=time.perf_counter() - started,
                    http_status=exc.status,
                )
                self._done(item, row, "errored", ledger, error=exc)
                return
            ledger = self.books.row(
                rid,
                item.dialect,
                row.model,
                tier=served.tier.value,
                backend=served.backend.name,
                route=served.route,
                status="ok",
                elapsed_s=time.perf_counter() - started,
                usage=response.usage,
                failovers=len(served.failovers),
            )
            self._done(item, row, "succeeded", ledger, response=response)
        except Exception:  # a bug of ours: the item still gets an answer and a ledger row
            log.exception("batch item %s (line %d) failed inside tiergate", item.custom_id, row.line)
            internal = TiergateError(f"internal error in tiergate (item {item.custom_id})")
            ledger = self.books.row(
                self._request_id(row.idx),
                item.dialect,
                row.model,
                tier=row.tier,
                backend=None,
                route=row.route,
                status="error",
                elapsed_s=time.perf_counter() - started,
                http_status=500,
            )
            self._done(item, row, "errored", ledger, error=internal)
        finally:
            self._slots.release()
            self.progress.done("live")

    async def _drain(self) -> None:
        while self._live:
            await asyncio.gather(*list(self._live), return_exceptions=True)

    async def _drain_cancelled(self) -> None:
        for task in list(self._live):
            task.cancel()
        await asyncio.gather(*list(self._live), return_exceptions=True)

    # -- the Message Batches half --------------------------------------------------------------------------

    def _client(self, backend: str) -> MessageBatches:
        if backend not in self._opened:
            self._opened[backend] = self._clients(backend)
        return self._opened[backend]

    async def _submit_open(self) -> None:
        for chunk in self.store.chunks("open"):
            if chunk.size:
                await self._submit(chunk.id)

    async def _submit(self, chunk_id: int) -> None:
        """Create the chunk's Message Batch. Marked ``submitting`` (committed) first: a run killed before the
        batch id is recorded finds the batch again instead of submitting its items twice."""
        chunk = self.store.chunk(chunk_id)
        self.store.set_chunk(chunk_id, "submitting")
        self.store.commit()
        requests = [(self._request_id(idx), params) for idx, params in self.store.chunk_requests(chunk_id)]
        batch = await self._client(chunk.backend).create(requests)
        if batch is None:
            log.warning("chunk %d: the Message Batch create got no answer; looking it up at the next poll", chunk_id)
            self._in_doubt[chunk_id] = time.monotonic()
            return
        self._in_doubt.pop(chunk_id, None)
        self.store.set_chunk(chunk_id, "submitted", batch.id)
        self.store.commit()
        log.info("chunk %d: %d requests submitted as %s", chunk_id, len(requests), batch.id)

    async def _reconcile(self, chunk_id: int) -> None:
        """A chunk whose create got no answer: adopt the batch it made, or submit it (it made none)."""
        chunk = self.store.chunk(chunk_id)
        assert chunk.submitted_at is not None
        try:
            found = await self._client(chunk.backend).find(chunk.submitted_at, chunk.size, self.store.claimed_batches())
        except (anthropic.APIError, httpx2.HTTPError) as exc:  # not known yet: asked again at the next poll
            log.warning("chunk %d: cannot list the Message Batches now (%s); next round", chunk_id, exc)
            self._in_doubt[chunk_id] = time.monotonic()
            return
        if found is not None:
            log.info("chunk %d: its Message Batch %s was created before the interruption; adopted", chunk_id, found.id)
            self.store.set_chunk(chunk_id, "submitted", found.id)
            self.store.commit()
            return
        log.info("chunk %d: no Message Batch was created for it; submitting it", chunk_id)
        await self._submit(chunk_id)

    async def _poll(self, *, wait: bool) -> None:
        """Poll the submitted batches until none is left (``wait``), or once."""
        while True:
            for chunk in self.store.chunks("submitting"):
                failed = self._in_doubt.get(chunk.id)
                if failed is None or time.monotonic() - failed >= self.options.poll_interval_s:
                    await self._reconcile(chunk.id)  # a create still under way on the server would show later
            for chunk in self.store.chunks("submitted"):
                assert chunk.batch_id is not None
                try:
                    batch = await self._client(chunk.backend).retrieve(chunk.batch_id)
                    if batch.processing_status == "ended":
                        await self._fetch(chunk.id, batch)
                except anthropic.NotFoundError:
                    log.warning("Message Batch %s is gone (deleted or archived); its items go again", chunk.batch_id)
                    await self._fetched(chunk.id, set(self.store.chunk_todo(chunk.id)), "missing")
                except (anthropic.APIError, httpx2.HTTPError) as exc:  # results read so far are kept
                    log.warning("Message Batch %s: cannot read it now (%s); next round", chunk.batch_id, exc)
            await self._submit_open()  # items that go again
            if not wait or not self.store.chunks("submitting", "submitted", "open"):
                return
            await asyncio.sleep(self.options.poll_interval_s)

    async def _fetch(self, chunk_id: int, batch: MessageBatch) -> None:
        chunk = self.store.chunk(chunk_id)
        todo = set(self.store.chunk_todo(chunk_id))
        elapsed = time.time() - (chunk.submitted_at or time.time())
        prefix = f"{self.run}-"
        async for entry in self._client(chunk.backend).results(batch.id):
            if not entry.custom_id.startswith(prefix):
                continue  # not this run's: an adopted batch that was not ours leaves our items to go again
            idx = int(entry.custom_id[len(prefix) :])
            if idx not in todo:
                continue  # done before an interruption, or not in this chunk
            todo.discard(idx)
            row = self.store.item(idx)
            assert row is not None
            self._result(row, entry, batch.id, elapsed)
        await self._fetched(chunk_id, todo, "missing")

    async def _fetched(self, chunk_id: int, unprocessed: set[int], why: str) -> None:
        for idx in sorted(unprocessed):
            row = self.store.item(idx)
            assert row is not None
            self._again(row, why, None, 0.0)
        self.store.set_chunk(chunk_id, "fetched")
        self.store.commit()

    def _result(self, row: ItemRow, entry: MessageBatchIndividualResponse, batch_id: str, elapsed: float) -> None:
        result = entry.result
        item = BatchItem(row.idx, row.line, row.custom_id, Dialect(row.dialect))
        route = f"{row.route};message-batch:{batch_id}" if row.route else f"message-batch:{batch_id}"
        if result.type == "succeeded":
            response = parse_message(result.message.model_dump(mode="json"), row.backend or "message-batches")
            if "policy:redact" in row.route:  # placeholders back in: the same redaction, computed again
                restorer = self._restorer(row)
                response = restorer.restore_response(response) if restorer is not None else response
            ledger = self._batch_ledger(row, item.dialect, route, "ok", elapsed, usage=response.usage)
            self._done(item, row, "succeeded", ledger, response=response, batch_id=batch_id)
        elif result.type == "errored":
            err = result.error.error
            status = _STATUS_OF.get(err.type, 500)
            body = json.dumps({"type": "error", "error": {"type": err.type, "message": err.message}}).encode()
            error = from_http_error(row.backend or "claude", status, {}, body)
            ledger = self._batch_ledger(row, item.dialect, route, "error", elapsed, http_status=error.status)
            self._done(item, row, "errored", ledger, error=error, batch_id=batch_id)
        elif result.type == "expired":
            self._again(row, "expired", batch_id, elapsed)
        else:
            ledger = self._batch_ledger(row, item.dialect, route, "cancelled", elapsed, http_status=499)
            self._done(item, row, "canceled", ledger, batch_id=batch_id)

    def _restorer(self, row: ItemRow) -> Restorer | None:
        """What puts a redacted item's personal data back in its answer: the redaction its params had, made
        again from the input line (the state file keeps only the redacted params)."""
        item = self._load(row)
        state = self.gateway.pool.get(row.backend) if row.backend else None
        if item.chat is None or state is None:
            return None
        verdict = self.gateway.policy.inspect(item.chat, key_sovereign=self.books.caller.sovereign, header=None)
        step = self.gateway.policy.outbound(verdict)
        return None if step is None else step(state, item.chat)[1]

    def _again(self, row: ItemRow, why: str, batch_id: str | None, elapsed: float) -> None:
        """An item its batch did not process: into a new chunk, or reported once its retries are spent."""
        if row.attempts <= self.options.expired_retries and row.backend is not None:
            params = self.store.params(row.idx)
            if params is not None:
                self._join(row.idx, row.backend, len(params))
                log.info("item %s: %s in its Message Batch; submitted again", row.custom_id, why)
                return
        item = BatchItem(row.idx, row.line, row.custom_id, Dialect(row.dialect))
        route = f"{row.route};message-batch:{batch_id}" if batch_id else row.route
        ledger = self._batch_ledger(row, item.dialect, route, "error", elapsed, http_status=504)
        self._done(item, row, "expired", ledger, batch_id=batch_id)

    # -- results and the ledger ----------------------------------------------------------------------------

    def _request_id(self, idx: int) -> str:
        return f"{self.run}-{idx}"

    def _batch_ledger(
        self,
        row: ItemRow,
        dialect: Dialect,
        route: str,
        status: Status,
        elapsed: float,
        *,
        usage: Usage | None = None,
        http_status: int = 200,
    ) -> LedgerRow:
        """The ledger row of an item sent in a Message Batch (billed at the batch price when it was served)."""
        return self.books.row(
            self._request_id(row.idx),
            dialect,
            row.model,
            tier=row.tier,
            backend=row.backend,
            route=route,
            status=status,
            elapsed_s=elapsed,
            usage=usage,
            message_batch=usage is not None,
            http_status=http_status,
        )

    def _done(
        self,
        item: BatchItem,
        row: ItemRow,
        result: Outcome,
        ledger: LedgerRow,
        *,
        response: ChatResponse | None = None,
        error: TiergateError | None = None,
        outcome: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        info: JSON = {
            "outcome": outcome or result,
            "tier": ledger.tier,
            "backend": ledger.backend,
            "route": ledger.route,
            "cost_usd": round(ledger.cost_usd, 10),
            "message_batch": batch_id,
        }
        line = render_line(item, self._request_id(row.idx), result, response=response, error=error, tiergate=info)
        self.store.finish(row.idx, line, row_to_json(ledger))
        if row.way != "live":  # live items count when their task ends
            self.progress.done(row.way)

    async def _checkpoints(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), CHECKPOINT_S)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("batch: checkpoint failed; the next one tries again")

    async def checkpoint(self) -> None:
        """Commit the store, then write the ledger rows of committed items and mark them, each exactly once:
        only rows of committed items reach the ledger, and after a write that may have been cut (a kill before
        this run, a cancel in it) rows already in the ledger are looked up and skipped."""
        async with self._lock:
            while True:
                self.store.commit()
                rows = self.store.unledgered()
                if not rows:
                    return
                await self._write_rows([values for _, values in rows])
                self.store.mark_ledgered(idx for idx, _ in rows)

    async def _write_rows(self, rows: list[JSON]) -> None:
        """Insert rows in one transaction, straight to the database (the ledger's queue would put a cut batch
        back and write it twice)."""
        engine = self.books.ledger.engine
        if self._uncertain:
            ids = [values["request_id"] for values in rows]
            async with engine.connect() as conn:
                query = select(ledger_table.c.request_id).where(ledger_table.c.request_id.in_(ids))
                there = set((await conn.execute(query)).scalars())
            rows = [values for values in rows if values["request_id"] not in there]
        if not rows:
            return
        self._uncertain = True
        async with engine.begin() as conn:
            await conn.execute(ledger_table.insert(), [row_from_json(values) for values in rows])
        self._uncertain = False


async def run_batch(
    config: Config,
    options: BatchOptions,
    progress: Progress | None = None,
    registry: dict[str, BackendFactory] | None = None,
) -> Report:
    """Run (or resume) one batch: see the module docstring."""
    progress = progress or _Quiet()
    caller = _caller(config, options.key)
    digest, size, total = fingerprint(options.input)
    store = Store(options.state_path)
    try:
        meta = store.meta()
        if not meta:
            run = f"tgb-{uuid.uuid4().hex[:12]}"
            store.set_meta(
                run=run,
                input=str(options.input),
                sha256=digest,
                size=size,
                items=total,
                caller=caller.name,
                next_offset=0,
                next_index=0,
                next_line=1,
                ingested=0,
            )
            store.commit()
        elif meta.get("sha256") != digest:
            raise BatchError(
                f"{options.state_path} is the state of a run over another input ({meta.get('input')}); "
                "give the same input, or a new --state"
            )
        run = store.meta()["run"]
        gateway = build_gateway(config, registry)
        books = BatchBooks.build(config, gateway.pool, run, caller)
        progress.start(total, store.counts())
        await gateway.pool.start()
        try:
            await gateway.load_encoder()
            await books.ledger.start()
            runner = Runner(config, options, gateway, books, store, progress, _factory(gateway))
            try:
                return await runner.execute()
            finally:
                await runner.close()
        finally:
            await books.ledger.close()
            await gateway.pool.close()
            gateway.close_encoder()
    finally:
        store.close()


def _factory(gateway: Gateway) -> Callable[[str], MessageBatches]:
    def build(name: str) -> MessageBatches:
        state = gateway.pool.get(name)
        assert state is not None
        return MessageBatches(state.config)

    return build


def _caller(config: Config, key: str | None) -> Caller:
    """The caller the items are routed as: a configured key's policy (sovereign, default tier), or ``batch``."""
    if key is None:
        return BATCH_CALLER
    for k in config.keys:
        if k.name == key:
            return Caller(name=k.name, sovereign=k.sovereign, default_tier=k.default_tier)
    known = ", ".join(k.name for k in config.keys) or "none configured"
    raise BatchError(f"--key {key!r} is not a key of the configuration (keys: {known})")
