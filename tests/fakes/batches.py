"""Anthropic's Message Batches API, for :class:`~tests.fakes.fake_anthropic.FakeAnthropic`.

Routes, as the real API has them (``x-api-key`` / bearer key and ``anthropic-version`` checked like the
Messages routes):

- ``POST /v1/messages/batches``: ``{"requests": [{"custom_id", "params"}, ...]}`` (1 to 100,000 requests,
  ``custom_id`` unique in the batch, ``^[a-zA-Z0-9_-]{1,64}$``) -> a ``message_batch`` object, ``in_progress``;
- ``GET /v1/messages/batches/{id}``: the object (``request_counts``, ``ended_at``, ``expires_at`` 24 hours after
  ``created_at``, ``results_url`` once ended);
- ``GET /v1/messages/batches/{id}/results``: the results as JSONL, one line per request, in no particular
  order (this fake shuffles them): ``{"custom_id", "result": {"type": "succeeded", "message": {...}}}``, or
  ``errored`` (``{"error": {"type": "error", "error": {"type", "message"}}}``), ``canceled``, ``expired``;
- ``POST /v1/messages/batches/{id}/cancel``: ``canceling`` until processing ends;
- ``GET /v1/messages/batches`` (``limit``, ``before_id``, ``after_id``; newest first) and
  ``DELETE /v1/messages/batches/{id}`` (only an ended batch).

Each request's ``params`` are validated when the batch is processed, not when it is created (as the real API
does): a bad one is an ``errored`` result with an ``invalid_request_error``. The step a request plays comes
from a ``[[fake-script:...]]`` marker in its last user message (headers do not exist per request): a
``Reply``/``Refusal`` or none succeeds, a ``Fault`` errors with its status's error type, a ``ContextLength``
errors as too long, and a ``Hang`` is never processed, so its batch stays ``in_progress`` until
:meth:`MessageBatches.expire` (the 24 hours have passed: ``expired``) or a cancel (``canceled``).

Time is in the test's hands: a batch ends once it has been retrieved ``polls`` times (``FakeAnthropic``'s
``batch_polls``, default 1: the first retrieve sees ``in_progress``) and nothing in it hangs, unless
:attr:`MessageBatches.held` keeps every batch in progress. :attr:`MessageBatches.hang_create` makes a create
record its batch, then hold the answer until the client goes away (a client killed between the server's
create and its own record of the id).
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.script import (
    ContextLength,
    Delay,
    Fault,
    Hang,
    RecordedRequest,
    Refusal,
    Reply,
    ScriptError,
    Step,
    estimate_tokens,
    idle,
)

MAX_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")


class Host(Protocol):
    """What the batches need of the fake Messages API that hosts them."""

    context_window: int | None

    def _check_headers(self, headers: Mapping[str, str], size: int) -> Response | None: ...
    def _record(self, request: Request, raw: bytes) -> RecordedRequest: ...
    def _error(
        self,
        status: int,
        error_type: str | None,
        message: str | None,
        headers: Mapping[str, str] | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> Response: ...
    def _validate(self, body: Mapping[str, Any], *, count_only: bool) -> Response | None: ...
    def _next_step(self, rec: RecordedRequest, last_user_text: str, *, queued: bool = True) -> Step | None: ...
    def _render_message(self, body: dict[str, Any], step: Reply | Refusal | None) -> dict[str, Any]: ...
    def _count(self, outcome: str) -> None: ...


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    """One batch. ``results`` holds the processed requests' result lines (hidden until the batch ends),
    ``waiting`` the custom ids of requests not processed yet (a ``Hang``)."""

    id: str
    created_at: datetime
    size: int
    results: list[bytes] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_TYPES, 0))
    polls: int = 0
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    archived_at: datetime | None = None
    deleted: bool = False

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(hours=24)

    @property
    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_initiated_at is not None else "in_progress"

    def finish(self, leftover: str, now: datetime) -> None:
        """End processing: requests still waiting become ``leftover`` (``canceled`` or ``expired``)."""
        for custom_id in self.waiting:
            self.results.append(_line(custom_id, {"type": leftover}))
            self.counts[leftover] += 1
        self.waiting = []
        self.ended_at = now

    def to_json(self, base_url: str) -> dict[str, Any]:
        ended = self.ended_at is not None
        counts = dict(self.counts) if ended else dict.fromkeys(RESULT_TYPES, 0)
        counts["processing"] = 0 if ended else self.size
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": counts,
            "ended_at": _iso(self.ended_at),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "archived_at": _iso(self.archived_at),
            "cancel_initiated_at": _iso(self.cancel_initiated_at),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def _line(custom_id: str, result: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":")).encode() + b"\n"


class MessageBatches:
    """The batches of one fake, safe to drive from the test's thread while the server runs in another."""

    def __init__(
        self, host: Host, new_id: Callable[[str], str], error_types: Mapping[int, str], *, polls: int = 1
    ) -> None:
        self.host = host
        self.new_id = new_id
        self.error_types = error_types
        #: retrieves of a batch before it ends (when nothing in it hangs)
        self.polls = polls
        #: keep every batch ``in_progress``, whatever its polls
        self.held = False
        #: a create records its batch, then answers only when released (or never, if the client goes away)
        self.hang_create = False
        #: the next creates answer 529 ``overloaded_error`` and create nothing
        self.fail_creates = 0
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}
        self._custom_ids: dict[str, list[str]] = {}
        self._release = threading.Event()

    # -- for tests ---------------------------------------------------------------------------------

    @property
    def all(self) -> list[Batch]:
        """Every batch created, oldest first."""
        with self._lock:
            return list(self._batches.values())

    def submitted_custom_ids(self) -> list[str]:
        """Every request's ``custom_id`` in every batch created (a request submitted twice shows twice)."""
        with self._lock:
            return [cid for b in self._batches.values() for cid in self._custom_ids.get(b.id, [])]

    def expire(self) -> None:
        """The 24 hours are up: every batch in progress ends, its unprocessed requests ``expired``."""
        now = datetime.now(UTC)
        with self._lock:
            for batch in self._batches.values():
                if batch.ended_at is None:
                    batch.finish("expired", now)

    def release_create(self) -> None:
        """Answer the creates held by :attr:`hang_create` (and stop holding new ones)."""
        self.hang_create = False
        self._release.set()

    # -- routes ------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages/batches", self._create, methods=["POST"]),
            Route("/v1/messages/batches", self._list, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._retrieve, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._delete, methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/results", self._results, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}/cancel", self._cancel, methods=["POST"]),
        ]

    async def _checked(self, request: Request) -> tuple[RecordedRequest | None, Response | None]:
        raw = await request.body()
        rec = self.host._record(request, raw)
        rejection = self.host._check_headers(rec.headers, len(raw))
        return (None, rejection) if rejection is not None else (rec, None)

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def _create(self, request: Request) -> Response:
        rec, rejection = await self._checked(request)
        if rejection is not None:
            return rejection
        assert rec is not None
        body = rec.body
        bad = self._check_create(body)
        if bad is not None:
            self.host._count("rejected")
            return self.host._error(400, "invalid_request_error", bad)
        with self._lock:
            overloaded, self.fail_creates = self.fail_creates > 0, max(0, self.fail_creates - 1)
        if overloaded:
            self.host._count("fault")
            return self.host._error(529, "overloaded_error", None)
        requests: list[dict[str, Any]] = body["requests"]
        batch = Batch(self.new_id("msgbatch_"), datetime.now(UTC), len(requests))
        for item in requests:
            self._process(batch, str(item["custom_id"]), item["params"], rec)
        with self._lock:
            self._custom_ids[batch.id] = [str(item["custom_id"]) for item in requests]
            self._batches[batch.id] = batch
        self.host._count("batch_created")
        if self.hang_create:
            released = False
            while not released:  # until released, or the client goes away (then nobody reads the answer)
                if not await idle(request, 0.05):
                    return Response(status_code=499)
                released = self._release.is_set()
        return self._json(batch.to_json(self._base(request)))

    def _check_create(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "There was an error parsing the body: expected a JSON object"
        requests = body.get("requests")
        if requests is None:
            return "requests: Field required"
        if not isinstance(requests, list):
            return "requests: Input should be a valid list"
        if not requests:
            return "requests: List should have at least 1 item after validation, not 0"
        if len(requests) > MAX_REQUESTS:
            return f"requests: List should have at most {MAX_REQUESTS} items after validation, not {len(requests)}"
        seen: set[str] = set()
        for i, item in enumerate(requests):
            if not isinstance(item, dict):
                return f"requests.{i}: Input should be a valid dictionary"
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                return f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            if custom_id in seen:
                return f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}' in batch"
            seen.add(custom_id)
            if "params" not in item:
                return f"requests.{i}.params: Field required"
        return None

    def _process(self, batch: Batch, custom_id: str, params: Any, rec: RecordedRequest) -> None:
        """Decide one request's result now; it is revealed when the batch ends."""
        error = self._invalid(params)
        step: Step | None = None
        if error is None:
            assert isinstance(params, dict)
            text = _last_user_text(params)
            try:
                step = self.host._next_step(rec, text, queued=False)
            except ScriptError as exc:
                error = ("invalid_request_error", f"fake: {exc}")
            while isinstance(step, Delay):
                step = step.then
            used = estimate_tokens(json.dumps(params.get("messages")))
            limit = self.host.context_window
            if error is None and step is None and limit is not None and used > limit:
                step = ContextLength(prompt_tokens=used, limit=limit)
        if error is None and isinstance(step, Hang):
            batch.waiting.append(custom_id)
            return
        if error is None and isinstance(step, Fault):
            kind = step.error_type or self.error_types.get(step.status, "api_error")
            error = (kind, step.message or kind)
        if error is None and isinstance(step, ContextLength):
            error = ("invalid_request_error", f"prompt is too long: {step.prompt_tokens} tokens > {step.limit} maximum")
        if error is not None:
            result = {"type": "errored", "error": {"type": "error", "error": {"type": error[0], "message": error[1]}}}
            batch.counts["errored"] += 1
        else:
            assert isinstance(params, dict)
            played = step if isinstance(step, Reply | Refusal) else None
            result = {"type": "succeeded", "message": self.host._render_message(params, played)}
            batch.counts["succeeded"] += 1
        batch.results.append(_line(custom_id, result))

    def _invalid(self, params: Any) -> tuple[str, str] | None:
        if not isinstance(params, dict):
            return "invalid_request_error", "params: Input should be a valid dictionary"
        if params.get("stream") is True:
            return "invalid_request_error", "stream: streaming is not supported in Message Batches"
        rejection = self.host._validate(params, count_only=False)
        if rejection is None:
            return None
        error = json.loads(bytes(rejection.body))["error"]
        return str(error["type"]), str(error["message"])

    def _find(self, batch_id: str) -> Batch | None:
        with self._lock:
            batch = self._batches.get(batch_id)
        return None if batch is None or batch.deleted else batch

    def _missing(self, batch_id: str) -> Response:
        return self.host._error(404, "not_found_error", f"message_batch not found: {batch_id}")

    async def _retrieve(self, request: Request) -> Response:
        _, rejection = await self._checked(request)
        if rejection is not None:
            return rejection
        batch = self._find(request.path_params["batch_id"])
        if batch is None:
            return self._missing(request.path_params["batch_id"])
        with self._lock:
            batch.polls += 1
            if batch.ended_at is None and not self.held:
                if batch.cancel_initiated_at is not None:
                    batch.finish("canceled", datetime.now(UTC))
                elif batch.polls > self.polls and not batch.waiting:
                    batch.finish("expired", datetime.now(UTC))  # nothing waits, so nothing expires
        return self._json(batch.to_json(self._base(request)))

    async def _results(self, request: Request) -> Response:
        _, rejection = await self._checked(request)
        if rejection is not None:
            return rejection
        batch = self._find(request.path_params["batch_id"])
        if batch is None:
            return self._missing(request.path_params["batch_id"])
        if batch.ended_at is None:
            return self.host._error(
                400, "invalid_request_error", f"Message Batch {batch.id} has not finished processing; no results yet"
            )
        lines = list(batch.results)
        random.Random(batch.id).shuffle(lines)  # the real API promises no order: the caller joins by custom_id

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(lines), 512):
                yield b"".join(lines[start : start + 512])

        return StreamingResponse(body(), media_type="application/binary", headers=self._headers())

    async def _cancel(self, request: Request) -> Response:
        _, rejection = await self._checked(request)
        if rejection is not None:
            return rejection
        batch = self._find(request.path_params["batch_id"])
        if batch is None:
            return self._missing(request.path_params["batch_id"])
        with self._lock:
            if batch.ended_at is None and batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = datetime.now(UTC)
        return self._json(batch.to_json(self._base(request)))

    async def _delete(self, request: Request) -> Response:
        _, rejection = await self._checked(request)
        if rejection is not None:
            return rejection
        batch = self._find(request.path_params["batch_id"])
        if batch is None:
            return self._missing(request.path_params["batch_id"])
        if batch.ended_at is None:
            return self.host._error(
                400, "invalid_request_error", f"Message Batch {batch.id} is still processing; cancel it first"
            )
        batch.deleted = True
        return self._json({"id": batch.id, "type": "message_batch_deleted"})

    async def _list(self, request: Request) -> Response:
        _, rejection = await self._checked(request)
        if rejection is not None:
            return rejection
        query = request.query_params
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            return self.host._error(400, "invalid_request_error", "limit: Input should be a valid integer")
        if not 1 <= limit <= 1000:
            return self.host._error(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        with self._lock:
            newest_first = [b for b in reversed(self._batches.values()) if not b.deleted]
        ids = [b.id for b in newest_first]
        if "after_id" in query:  # the page after (older than) this object
            at = ids.index(query["after_id"]) + 1 if query["after_id"] in ids else len(ids)
            page = newest_first[at : at + limit]
            has_more = at + limit < len(ids)
        elif "before_id" in query:  # the page before (newer than) this object
            at = ids.index(query["before_id"]) if query["before_id"] in ids else 0
            page = newest_first[max(0, at - limit) : at]
            has_more = at - limit > 0
        else:
            page, has_more = newest_first[:limit], len(ids) > limit
        base = self._base(request)
        data = [b.to_json(base) for b in page]
        return self._json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def _headers(self) -> dict[str, str]:
        return {"request-id": self.new_id("req_")}

    def _json(self, data: Mapping[str, Any]) -> Response:
        return Response(json.dumps(data), media_type="application/json", headers=self._headers())


def _last_user_text(params: Mapping[str, Any]) -> str:
    for message in reversed(params.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""
