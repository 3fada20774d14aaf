"""The scripting engine shared by the fake upstreams (``fake_anthropic``, ``fake_openai``).

A fake answers each request with one *step*. Where the step comes from, first match wins:

1. the request header ``x-fake-script: <json>`` (see :func:`script_header`), for tests that run
   requests concurrently and want to control one of them;
2. a marker ``[[fake-script:<json>]]`` anywhere in the last user message's text: it survives a
   gateway that drops unknown headers or translates between dialects;
3. the FIFO queue filled by ``fake.script(step, ...)``, one step consumed per request;
4. the flapping pattern set by ``fake.flap(["ok", "fail", ...])``, cycled forever;
5. ``fake.responder(body)``, when set: a step computed from the request itself;
6. otherwise the default reply (same as ``Reply()``).

Steps are frozen dataclasses; the JSON form is ``{"kind": "<snake_case class name>", **fields}``,
e.g. ``{"kind": "fault", "status": 529}`` or ``{"kind": "delay", "seconds": 0.5, "then": {"kind":
"reply", "text": "late"}}``. To add a step: define the dataclass, add it to ``Step`` and ``_KINDS``,
and handle it in :meth:`FakeUpstream._play` (and ``_stream`` if it shapes a stream); dialect
specifics go through the hooks each fake overrides (``_error``, ``_render``, ...).

This module also holds the plumbing both fakes share: the request log (:class:`RecordedRequest`),
token estimates, JSON-schema synthesis of tool arguments, text chunking, and the helpers that make
a connection die abruptly or wait without blocking the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

SCRIPT_HEADER = "x-fake-script"
SCRIPT_MARKER = "[[fake-script:"

# ----------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Reply:
    """A successful answer. Fields left ``None`` fall back to the default reply's.

    ``tool_use`` items are ``{"name": str, "input": dict}`` (optionally ``"id"``); the OpenAI fake
    renders them as ``tool_calls``. ``stop_reason`` may be Anthropic's or OpenAI's vocabulary; each
    fake maps it to its own. ``usage`` entries override the computed usage fields.
    """

    text: str | None = None
    tool_use: list[dict[str, Any]] | None = None
    stop_reason: str | None = None
    usage: dict[str, int] | None = None


@dataclass(frozen=True)
class Fault:
    """An HTTP error with the dialect's real error body. ``error_type=None`` picks the type the real
    API uses for ``status``; ``message=None`` a stock message. ``retry_after`` (seconds) adds a
    ``retry-after`` header; ``headers`` adds any others (e.g. ``{"x-should-retry": "false"}``)."""

    status: int
    error_type: str | None = None
    message: str | None = None
    retry_after: float | None = None
    code: str | None = None  # OpenAI envelope's "code"
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Hang:
    """Read the request, then never answer, until the client disconnects, ``fake.release()`` is
    called, or ``seconds`` (if given) pass. Only this request's task waits."""

    seconds: float | None = None


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before the first byte, then play ``then`` (``None``: the default reply)."""

    seconds: float
    then: Step | None = None


@dataclass(frozen=True)
class CutStream:
    """Send ``after_events`` SSE events, then drop the connection (no terminating chunk, no
    ``message_stop`` / ``[DONE]``). Non-streaming requests get a truncated body instead."""

    after_events: int = 2


@dataclass(frozen=True)
class SlowFirstToken:
    """Answer at once (status, headers and the stream's opening events that carry no text), then wait
    ``seconds`` before the first token and finish normally. Non-streaming requests get the full response
    after ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class StallStream:
    """Send ``after_events`` SSE events, go silent for ``seconds``, then finish normally.
    Non-streaming requests get the full response after ``seconds``."""

    after_events: int
    seconds: float


@dataclass(frozen=True)
class MalformedStream:
    """A 200 whose body is not valid: the stream carries ``data: {not json``; a non-streaming
    response is a truncated JSON document."""


@dataclass(frozen=True)
class StreamError:
    """Send ``after_events`` SSE events, then the dialect's in-stream error event and end the
    stream (Anthropic: ``event: error``; OpenAI/vLLM: ``data: {"error": ...}``). A non-streaming
    request gets the equivalent HTTP error (529 for Anthropic's overloaded_error)."""

    after_events: int = 2
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class ContextLength:
    """The real "prompt too long" 400 of the dialect."""

    prompt_tokens: int = 250000
    limit: int = 200000


@dataclass(frozen=True)
class Refusal:
    """A safety refusal: Anthropic ``stop_reason: "refusal"``, OpenAI ``finish_reason:
    "content_filter"``."""

    text: str = "I can't help with that."


Step = (
    Reply
    | Fault
    | Hang
    | Delay
    | CutStream
    | SlowFirstToken
    | StallStream
    | MalformedStream
    | StreamError
    | ContextLength
    | Refusal
)

_KINDS: dict[str, type[Any]] = {
    "reply": Reply,
    "fault": Fault,
    "hang": Hang,
    "delay": Delay,
    "cut_stream": CutStream,
    "slow_first_token": SlowFirstToken,
    "stall_stream": StallStream,
    "malformed_stream": MalformedStream,
    "stream_error": StreamError,
    "context_length": ContextLength,
    "refusal": Refusal,
}
_KIND_OF: dict[type[Any], str] = {cls: kind for kind, cls in _KINDS.items()}


class ScriptError(ValueError):
    """A scripted step (header or marker) that cannot be parsed."""


def step_to_json(step: Step | None) -> dict[str, Any] | None:
    """The JSON-able form of ``step`` (``None`` stays ``None``: the default reply)."""
    if step is None:
        return None
    out: dict[str, Any] = {"kind": _KIND_OF[type(step)]}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        if type(value) in _KIND_OF:
            value = step_to_json(value)
        out[f.name] = value
    return out


def step_from_json(data: Any) -> Step | None:
    """Inverse of :func:`step_to_json`; raises :class:`ScriptError` on anything unexpected."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ScriptError(f"a step must be a JSON object, got {type(data).__name__}")
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = _KINDS.get(str(kind).lower()) if kind is not None else None
    if cls is None:
        raise ScriptError(f"unknown step kind {kind!r}; expected one of {sorted(_KINDS)}")
    if cls is Delay and "then" in fields:
        fields["then"] = step_from_json(fields["then"])
    try:
        step: Step = cls(**fields)
    except TypeError as exc:
        raise ScriptError(f"bad fields for {kind!r}: {exc}") from None
    return step


def script_header(step: Step | None) -> dict[str, str]:
    """Headers that make one request play ``step``: ``client.create(..., extra_headers=script_header(s))``."""
    return {SCRIPT_HEADER: json.dumps(step_to_json(step))}


def script_marker(step: Step | None) -> str:
    """Text to embed in a user message that makes that request play ``step``."""
    return f"{SCRIPT_MARKER}{json.dumps(step_to_json(step))}]]"


def parse_marker(text: str) -> tuple[bool, Step | None]:
    """``(found, step)`` for a ``[[fake-script:{...}]]`` marker in ``text``."""
    at = text.find(SCRIPT_MARKER)
    if at < 0:
        return False, None
    try:
        data, _ = json.JSONDecoder().raw_decode(text, at + len(SCRIPT_MARKER))
    except json.JSONDecodeError as exc:
        raise ScriptError(f"bad {SCRIPT_MARKER}...]] marker: {exc}") from None
    return True, step_from_json(data)


FlapItem = str | Step | None

#: How a fake treats a final assistant turn (a prefill, or a cut stream's text to continue):
#: ``continue`` it (the rest of its own answer when that answer starts with the prefix, else
#: :data:`CONTINUATION`; the OpenAI fake only when asked with ``continue_final_message``, as vLLM),
#: ``reject`` it with the 400 of models that do not support prefill, or ``ignore`` it and answer from
#: the start (as OpenAI-compatible servers without ``continue_final_message`` do).
PREFILL_MODES = ("continue", "reject", "ignore")
PREFILL_REJECTION = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
CONTINUATION = " and that is the rest of the answer."


def continued(full: str, prefix: str) -> str:
    """What a model that continues ``prefix`` answers, when its own answer would have been ``full``."""
    return full[len(prefix) :] if full.startswith(prefix) else CONTINUATION


# ---------------------------------------------------------------------------------- request log


@dataclass
class RecordedRequest:
    """One request as the fake received it. ``body`` is the parsed JSON (``None`` if it was not
    JSON); ``step`` is what the fake played (``None``: the default reply or a validation error)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""
    query: dict[str, str] = field(default_factory=dict)
    step: Step | None = None
    at: float = field(default_factory=time.monotonic)


class FakeUpstream:
    """State and scripting shared by the fakes. Subclasses set ``app`` and ``flap_failure``.

    Everything public here is safe to call from the test's thread while the server runs in
    another one.
    """

    #: what a ``"fail"`` entry of a flap pattern plays
    flap_failure: Step = Fault(500)

    def __init__(self, *, record: bool = True) -> None:
        #: keep a log of the requests (``received``); turn off for long benchmark runs
        self.record = record
        self._lock = threading.Lock()
        self._queue: deque[Step | None] = deque()
        self._flap: list[Step | None] = []
        self._flap_index = 0
        self._received: list[RecordedRequest] = []
        self._stats: Counter[str] = Counter()
        self._release_generation = 0

    # -- scripting ------------------------------------------------------------------------------

    def script(self, *steps: Step | None) -> None:
        """Queue steps, one per coming request (``None`` queues a default reply)."""
        with self._lock:
            self._queue.extend(steps)

    def flap(self, pattern: str | Iterable[FlapItem] | None) -> None:
        """Cycle through ``pattern`` once the queue is empty: ``"ok"`` (default reply), ``"fail"``
        (``flap_failure``) or any step; a string is split on commas/whitespace. ``None`` stops."""
        items: list[FlapItem] = (
            []
            if pattern is None
            else ([p for p in re.split(r"[\s,]+", pattern) if p] if isinstance(pattern, str) else list(pattern))
        )
        steps: list[Step | None] = []
        for item in items:
            if item == "ok" or item is None:
                steps.append(None)
            elif item == "fail":
                steps.append(self.flap_failure)
            elif isinstance(item, str):
                raise ValueError(f"flap pattern items are 'ok', 'fail' or steps, not {item!r}")
            else:
                steps.append(item)
        with self._lock:
            self._flap = steps
            self._flap_index = 0

    def release(self) -> None:
        """Wake every request currently held by :class:`Hang`."""
        with self._lock:
            self._release_generation += 1

    def reset(self) -> None:
        """Forget the queue, the flap pattern, the log and the stats; release hung requests."""
        with self._lock:
            self._queue.clear()
            self._flap = []
            self._flap_index = 0
            self._received.clear()
            self._stats.clear()
            self._release_generation += 1

    # -- observation ----------------------------------------------------------------------------

    @property
    def received(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def stats(self) -> dict[str, int]:
        """Requests handled, by outcome (``ok``, ``rejected``, ``fault``, ``hang``, ``cut``, ...)."""
        with self._lock:
            return dict(self._stats)

    @property
    def pending_steps(self) -> int:
        with self._lock:
            return len(self._queue)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block (test thread) until at least ``count`` requests were received."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} requests, got {len(got)}")
            time.sleep(0.005)

    # -- for subclasses -------------------------------------------------------------------------

    def _record(self, request: Request, raw: bytes) -> RecordedRequest:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw=raw,
            query=dict(request.query_params),
        )
        if self.record:
            with self._lock:
                self._received.append(rec)
        return rec

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._stats[outcome] += 1

    def _next_step(self, rec: RecordedRequest, last_user_text: str, *, queued: bool = True) -> Step | None:
        """Pick the step for this request (see the module docstring); raises :class:`ScriptError`.
        ``queued=False`` (side routes such as count_tokens) honours only the header and the marker."""
        header = rec.headers.get(SCRIPT_HEADER)
        if header is not None:
            try:
                data = json.loads(header)
            except ValueError as exc:
                raise ScriptError(f"{SCRIPT_HEADER} is not JSON: {exc}") from None
            step = step_from_json(data)
        else:
            found, step = parse_marker(last_user_text)
            if not found and queued:
                with self._lock:
                    if self._queue:
                        step = self._queue.popleft()
                    elif self._flap:
                        step = self._flap[self._flap_index % len(self._flap)]
                        self._flap_index += 1
                    elif self.responder is not None:
                        step = self.responder(rec.body)
        rec.step = step
        return step

    def _release_token(self) -> int:
        with self._lock:
            return self._release_generation

    # -- the ASGI app and the step runner; dialect hooks below are overridden by each fake ------

    #: latency added before every scripted or default answer (not before validation errors)
    delay_s: float = 0.0
    #: slow-first-token mode: every successful answer (the default reply, a :class:`Reply`, a :class:`Refusal`)
    #: is played as :class:`SlowFirstToken` of this many seconds (0: off). Scripted faults play as they are.
    first_token_s: float = 0.0
    #: when neither header, marker, queue nor flap pattern gives a step: a function of the request's JSON body
    #: that returns one (``None``: the default reply), for fakes whose answers depend on the prompt
    #: (``tests/fakes/judge.py``)
    responder: Callable[[Any], Step | None] | None = None
    #: what a final assistant turn gets (:data:`PREFILL_MODES`)
    prefill: str = "continue"
    #: opening events of a stream that carry no text (sent before a :class:`SlowFirstToken` waits)
    preamble_events: int = 1
    #: the bytes a :class:`MalformedStream` sends after the first event
    stream_garbage: bytes = b"data: {not json\n\n"

    def _build_app(self, routes: list[Route]) -> Starlette:
        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            message = f"{request.method} {request.url.path}: " + ("Not Found" if status == 404 else str(exc))
            return self._error(status, None, message)

        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    app: Starlette

    def _error(
        self,
        status: int,
        error_type: str | None,
        message: str | None,
        headers: Mapping[str, str] | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> Response:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _render(self, body: dict[str, Any], step: Reply | Refusal | None) -> Rendered:
        raise NotImplementedError

    def _context_length(self, step: ContextLength) -> Response:
        raise NotImplementedError

    def _stream_error_events(self, step: StreamError) -> list[bytes]:
        raise NotImplementedError

    def _stream_error_status(self, step: StreamError) -> int:
        raise NotImplementedError

    def _fault(self, step: Fault) -> Response:
        headers = dict(step.headers or {})
        if step.retry_after is not None:
            headers["retry-after"] = retry_after_value(step.retry_after)
        return self._error(step.status, step.error_type, step.message, headers, code=step.code)

    def _continuing(self, body: Mapping[str, Any]) -> str | None:
        """The final assistant turn's text, when this fake continues it (``prefill == "continue"``)."""
        messages = body.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if self.prefill != "continue" or last.get("role") != "assistant":
            return None
        content = last.get("content")
        if isinstance(content, list):
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else None

    def _refuses_prefill(self, body: Mapping[str, Any]) -> bool:
        messages = body.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        return self.prefill == "reject" and last.get("role") == "assistant"

    async def _play(self, request: Request, body: dict[str, Any], step: Step | None, stream: bool) -> Response:
        """Answer one validated request according to ``step``."""
        if self._refuses_prefill(body):
            self._count("prefill_rejected")
            return self._error(400, "invalid_request_error", PREFILL_REJECTION)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        while isinstance(step, Delay):
            self._count("delayed")
            if not await idle(request, step.seconds):
                return Response(status_code=499)  # the client went away; nobody reads this
            step = step.then
        if isinstance(step, Hang):
            self._count("hang")
            if not await idle(request, step.seconds, self):
                return Response(status_code=499)
            step = None  # released or timed out: the upstream finally answers
        else:
            self._count("ok" if step is None or isinstance(step, Reply) else _KIND_OF[type(step)])
        if isinstance(step, Fault):
            return self._fault(step)
        if isinstance(step, ContextLength):
            return self._context_length(step)
        if isinstance(step, StreamError) and not stream:
            return self._error(self._stream_error_status(step), step.error_type, step.message)
        reply = self._render(body, step if isinstance(step, (Reply, Refusal)) else None)
        if self.first_token_s > 0 and (step is None or isinstance(step, Reply | Refusal)):
            step = SlowFirstToken(self.first_token_s)  # the answer's text is rendered already: only the timing
        if stream:
            return StreamingResponse(
                self._stream(request, reply.to_events(), step),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", **self._headers()},
            )
        data = reply.to_json()
        if isinstance(step, CutStream):
            return StreamingResponse(
                _cut(data), media_type="application/json", headers={"content-length": str(len(data)), **self._headers()}
            )
        if isinstance(step, MalformedStream):
            data = data[: len(data) // 2]
        elif isinstance(step, StallStream | SlowFirstToken) and not await idle(request, step.seconds, self):
            return Response(status_code=499)
        return Response(data, media_type="application/json", headers=self._headers())

    async def _stream(self, request: Request, events: list[bytes], step: Step | None) -> AsyncIterator[bytes]:
        if isinstance(step, MalformedStream):
            yield events[0]
            yield self.stream_garbage
            return
        head = len(events)
        if isinstance(step, (CutStream, StallStream, StreamError)):
            head = max(0, step.after_events)
        elif isinstance(step, SlowFirstToken):
            head = self.preamble_events
        for event in events[:head]:
            yield event
        if isinstance(step, CutStream):
            raise AbortConnection(f"CutStream after {head} events")
        if isinstance(step, StreamError):
            for event in self._stream_error_events(step):
                yield event
        elif isinstance(step, StallStream | SlowFirstToken) and await idle(request, step.seconds, self):
            for event in events[head:]:
                yield event


class Rendered(Protocol):
    """A successful answer in one dialect: a JSON body, or the list of SSE events that stream it."""

    def to_json(self) -> bytes: ...

    def to_events(self) -> list[bytes]: ...


async def _cut(data: bytes) -> AsyncIterator[bytes]:
    yield data[: len(data) // 2]
    raise AbortConnection("CutStream in a non-streaming body")


# ------------------------------------------------------------------------------ async plumbing


async def idle(request: Request, seconds: float | None, fake: FakeUpstream | None = None) -> bool:
    """Wait ``seconds`` (``None``: forever) without blocking other requests. Returns ``False`` as
    soon as the client disconnects; ``True`` when the time is up or ``fake.release()`` was called.
    Must be called after the body was read."""
    if seconds is not None and seconds <= 0:
        return True
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    token = fake._release_token() if fake is not None else 0
    poll = 0.05 if fake is not None else None
    receiver: asyncio.Future[Any] = asyncio.ensure_future(request.receive())
    try:
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return True
            timeout = remaining if poll is None else (poll if remaining is None else min(poll, remaining))
            done, _ = await asyncio.wait({receiver}, timeout=timeout)
            if done:
                if receiver.result().get("type") == "http.disconnect":
                    return False
                receiver = asyncio.ensure_future(request.receive())
            if fake is not None and fake._release_token() != token:
                return True
    finally:
        receiver.cancel()


class AbortConnection(Exception):
    """Raised inside a response body iterator to make uvicorn drop the connection mid-response.
    Its "Exception in ASGI application" log record is filtered out (it is on purpose)."""


def _is_abort(exc: BaseException | None) -> bool:
    if isinstance(exc, AbortConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_abort(e) for e in exc.exceptions)
    if exc is not None and exc.__cause__ is not None:
        return _is_abort(exc.__cause__)
    return False


class _DropAbortRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_abort(record.exc_info[1]))


_FILTER = _DropAbortRecords()


def install_log_filter() -> None:
    """Silence the deliberate connection drops in uvicorn's error log (idempotent)."""
    for name in ("uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


install_log_filter()

# ------------------------------------------------------------------------------------- helpers


def estimate_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per 4 characters, rounded up."""
    return (len(text) + 3) // 4


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    return text[: max_tokens * 4]


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` before the earliest stop sequence; returns ``(text, matched stop or None)``."""
    best: tuple[int, str] | None = None
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def split_text(text: str, pieces: int) -> list[str]:
    """Split ``text`` at word boundaries into at most ``pieces`` non-empty chunks (joined, they give
    ``text`` back exactly)."""
    if not text:
        return []
    words = re.split(r"(?<=\s)(?=\S)", text)
    per = max(1, math.ceil(len(words) / max(1, pieces)))
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def split_even(text: str, pieces: int) -> list[str]:
    """Split ``text`` into ``pieces`` roughly equal non-empty chunks (for JSON fragments)."""
    if not text:
        return []
    per = max(1, math.ceil(len(text) / max(1, pieces)))
    return [text[i : i + per] for i in range(0, len(text), per)]


def synthesize(schema: Any) -> Any:
    """A value that satisfies a (simple) JSON schema: required properties only, strings ``"x"``,
    numbers ``1``, booleans ``true``, the first ``enum`` value, ``const`` or ``default`` if given."""
    if not isinstance(schema, Mapping):
        return "x"
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return synthesize(options[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: synthesize(props.get(name, {})) for name in required}
    if kind == "array":
        min_items = schema.get("minItems") or 0
        return [synthesize(schema.get("items", {})) for _ in range(int(min_items))]
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        return low if isinstance(low, (int, float)) and low > 1 else 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x"


def retry_after_value(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))
