"""Anthropic's Message Batches API, through the official SDK: create, retrieve, find, results, cancel.

A create is never retried by the SDK (a retry after a lost answer would submit the requests twice): a create
that fails without a definite answer leaves the batch *in doubt*, and :meth:`MessageBatches.find` settles it
by listing the account's batches (newest first) for one created since the attempt with the same number of
requests that no other chunk of the run has claimed. A create refused outright (a 4xx other than 429) is
:class:`BatchRefused`: it would fail again.

Results stream from ``results_url`` as JSONL (the SDK's decoder reads it line by line; nothing is held).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import anthropic
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from tiergate.backends.base import config_of
from tiergate.backends.http import timeouts
from tiergate.config import AnthropicConfig, BackendConfig
from tiergate.errors import TiergateError

__all__ = ["BatchRefused", "MessageBatches"]

#: Clock skew allowed between this machine and the API when matching a batch to the time of its create.
SKEW_S = 300.0
#: Retries of reads (retrieve, list, results) after connection errors, 429 and 5xx; creates are never retried.
READ_RETRIES = 4


class BatchRefused(TiergateError):
    """The API refused a batch outright (a bad key, a batch over its limits): retrying would fail the same way."""

    status = 400
    kind = "invalid_request_error"


class MessageBatches:
    """The Message Batches of one backend (``kind: anthropic``)."""

    def __init__(self, config: BackendConfig, client: anthropic.AsyncAnthropic | None = None) -> None:
        self.config = config_of(config, AnthropicConfig)
        self.name = config.name
        if client is None:
            key = os.environ.get(self.config.api_key_env or "ANTHROPIC_API_KEY") or None
            client = anthropic.AsyncAnthropic(
                api_key=key, base_url=self.config.base_url, max_retries=READ_RETRIES, timeout=timeouts(self.config)
            )
        self._client = client

    async def close(self) -> None:
        await self._client.close()

    async def create(self, requests: Iterable[tuple[str, str]]) -> MessageBatch | None:
        """Create a batch of ``(custom_id, params as JSON text)`` requests; ``None`` when it is in doubt (no
        answer: it may or may not exist, see :meth:`find`). Raises :class:`BatchRefused` on a definite refusal.

        The body is written from the params' text as it is (never parsed again): a batch of 10,000 requests
        costs its bytes in memory, not 10,000 dictionaries."""
        body = b'{"requests":[' + b",".join(_request(cid, params) for cid, params in requests) + b"]}"
        try:
            batch: MessageBatch = await self._client.with_options(max_retries=0).post(
                "/v1/messages/batches",
                cast_to=MessageBatch,
                content=body,
                options={"headers": {"content-type": "application/json"}},
            )
        except anthropic.APIStatusError as exc:
            if _definite(exc.status_code):
                raise BatchRefused(f"{self.name}: Message Batches refused the batch: {_describe(exc)}") from exc
            return None
        except anthropic.APIError:
            return None
        return batch

    @contextlib.contextmanager
    def _refusals(self, what: str, *, keep: tuple[int, ...] = ()) -> Iterator[None]:
        """A definite refusal (a bad key, no permission: a 4xx other than 408, 409, 429 and ``keep``) becomes
        :class:`BatchRefused`, which stops the run: asking again would fail the same way."""
        try:
            yield
        except anthropic.APIStatusError as exc:
            if _definite(exc.status_code) and exc.status_code not in keep:
                raise BatchRefused(f"{self.name}: Message Batches refused {what}: {_describe(exc)}") from exc
            raise

    async def retrieve(self, batch_id: str) -> MessageBatch:
        """The batch; a 404 (deleted or archived) is raised as the SDK's ``NotFoundError``."""
        with self._refusals(f"to read {batch_id}", keep=(404,)):
            return await self._client.messages.batches.retrieve(batch_id)

    async def find(self, since: float, size: int, claimed: set[str]) -> MessageBatch | None:
        """The batch a create in doubt made: created at ``since`` (epoch seconds, this machine's clock) or
        later, with ``size`` requests, not in ``claimed``; the earliest such. ``None``: the create made none."""
        found: MessageBatch | None = None
        with self._refusals("to list the batches"):
            async for batch in self._client.messages.batches.list(limit=100):
                created = batch.created_at.timestamp()
                if created < since - SKEW_S:
                    break  # newest first: every later one is older still
                if batch.id not in claimed and _total(batch) == size:
                    found = batch  # keep going: the earliest one after the attempt is the one it made
        return found

    async def results(self, batch_id: str) -> AsyncIterator[MessageBatchIndividualResponse]:
        with self._refusals(f"the results of {batch_id}"):
            decoder = await self._client.messages.batches.results(batch_id)
            async for entry in decoder:
                yield entry

    async def cancel(self, batch_id: str) -> MessageBatch:
        with self._refusals(f"to cancel {batch_id}"):
            return await self._client.messages.batches.cancel(batch_id)


def _request(custom_id: str, params: str) -> bytes:
    return b'{"custom_id":' + json.dumps(custom_id).encode() + b',"params":' + params.encode() + b"}"


def _definite(status: int) -> bool:
    """A status that says "not this request, ever" rather than "not now"."""
    return 400 <= status < 500 and status not in (408, 409, 429)


def _total(batch: MessageBatch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


def _describe(exc: anthropic.APIStatusError) -> str:
    body: Any = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"HTTP {exc.status_code} {error.get('type')}: {error.get('message')}"
    return f"HTTP {exc.status_code}"
