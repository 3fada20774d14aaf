"""A faithful fake of Anthropic's Messages API, as a Starlette app, for tests and benchmarks.

Routes: ``POST /v1/messages`` (JSON or SSE with the real event sequence),
``POST /v1/messages/count_tokens`` and the Message Batches API (``/v1/messages/batches``: see
``tests/fakes/batches.py``; ``fake.batches`` drives it). Requests are checked like the real API where that is cheap
(the key in ``x-api-key`` or, as the 2.x SDK sends it, ``Authorization: Bearer``; the
``anthropic-version`` header; ``model``, ``max_tokens``, ``messages``; body size), and errors carry
the real body ``{"type": "error", "error": {"type", "message"}, "request_id"}``. Every
response has a ``request-id`` header.

Example::

    from tests.fakes import FakeAnthropic, Fault, Reply, script_header
    from tests.support.servers import serve_app

    fake = FakeAnthropic()                      # or FakeAnthropic(api_key="sk-test") to check the key
    with serve_app(fake) as base_url:           # the fake is an ASGI app (``fake.app`` also works)
        client = anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0)
        fake.script(Fault(529), Reply(text="second try"))    # one step per coming request
        ...
        client.messages.create(..., extra_headers=script_header(Fault(429, retry_after=2)))
        assert fake.received[-1].body["model"] == "claude-x"

Without a script the reply is ``"Hello from fake Claude. You said: <first 40 chars>"``; a tool
call (arguments synthesised from the tool's ``input_schema``) when ``tool_choice`` is ``any`` or
``tool``; a text mentioning the tool result when the last user turn carries a ``tool_result``.
``max_tokens`` and ``stop_sequences`` truncate the text as the real API does (4 characters a
token). With ``context_window`` set, prompts over it get the real "prompt is too long" 400.
See ``tests/fakes/script.py`` for the steps and the ways to script a request.

Extended thinking and prompt caching work as Claude's do, so a test can tell whether they survived the way
through the gateway. With ``thinking: {"type": "enabled", "budget_tokens": N}`` (N >= 1024, below
``max_tokens``) the answer opens with a ``thinking`` block whose ``signature`` the fake made (streamed as
``thinking_delta`` then ``signature_delta``); a ``thinking`` block replayed in a later request must carry the
signature the fake gave it, byte for byte, or the request gets Claude's 400. ``cache_control`` breakpoints (on
tools, system blocks and message blocks, in that order) cache the prompt up to the last one: the first request
with a prefix reports it as ``cache_creation_input_tokens``, later ones as ``cache_read_input_tokens``
(``input_tokens`` is the rest). The fake caches any prefix (Claude needs 1,024 tokens or more).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.batches import MessageBatches
from tests.fakes.script import (
    PREFILL_MODES,
    ContextLength,
    FakeUpstream,
    Fault,
    Refusal,
    Reply,
    ScriptError,
    Step,
    StreamError,
    apply_stop,
    continued,
    estimate_tokens,
    split_even,
    split_text,
    synthesize,
    truncate_to_tokens,
)

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}
STATUS_OF_TYPE: dict[str, int] = {t: s for s, t in ERROR_TYPES.items()}
# OpenAI finish reasons, accepted in Reply.stop_reason for scripts shared between the fakes
_STOP_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ALPHABET = string.ascii_letters + string.digits
_SIGNING_KEY = b"fake-claude-thinking"
THINKING_MIN_BUDGET = 1024


def signature(thinking: str) -> str:
    """The signature the fake gives a thinking text (and checks on a replayed thinking block)."""
    return "sig_" + hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).hexdigest()


def _breakpoints(body: Mapping[str, Any]) -> list[Any]:
    """Everything the prompt cache covers, in Claude's order: tools, system blocks, message blocks; each with
    whether it carries a ``cache_control`` breakpoint."""
    parts: list[Any] = []
    for tool in body.get("tools") or []:
        parts.append(tool)
    system = body.get("system")
    parts.extend(system if isinstance(system, list) else [system] if system else [])
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        parts.extend(content if isinstance(content, list) else [content])
    return parts


def new_id(prefix: str) -> str:
    """An id shaped like the real ones: ``msg_01`` + 22 base62 characters."""
    return prefix + "01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def text_of(content: Any) -> str:
    """The text of a message's ``content`` (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "tool_result":
            parts.append(text_of(block.get("content", "")))
        elif kind == "tool_use":
            parts.append(f"{block.get('name', '')} {json.dumps(block.get('input', {}))}")
    return " ".join(parts)


def prompt_text(body: Mapping[str, Any]) -> str:
    """Everything the prompt-token estimate counts: system, messages and tool definitions."""
    parts = [text_of(body.get("system", ""))]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(text_of(message.get("content", "")))
    for tool in body.get("tools") or []:
        parts.append(json.dumps(tool, sort_keys=True))
    return "\n".join(p for p in parts if p)


def last_user(body: Mapping[str, Any]) -> Mapping[str, Any]:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return {}


@dataclass
class Message:
    """A rendered Messages API response."""

    id: str
    model: str
    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, Any]
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    def to_events(self) -> list[bytes]:
        start = {
            **self.to_dict(),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**self.usage, "output_tokens": 1},
        }
        events = [sse("message_start", {"type": "message_start", "message": start})]
        ping = sse("ping", {"type": "ping"})
        for index, block in enumerate(self.content):
            if block["type"] == "tool_use":
                opening = {**block, "input": {}}
                deltas = [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in ["", *split_even(json.dumps(block["input"]), 3)]
                ]
            elif block["type"] == "thinking":
                opening = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": part} for part in split_text(block["thinking"], 3)]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            else:
                opening = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": part} for part in split_text(block["text"], self.chunks)]
            events.append(
                sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
            )
            if index == 0:
                events.append(ping)
            events.extend(
                sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
            )
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        if not self.content:
            events.append(ping)
        events.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                    "usage": {"output_tokens": self.usage["output_tokens"]},
                },
            )
        )
        events.append(sse("message_stop", {"type": "message_stop"}))
        return events


class FakeAnthropic(FakeUpstream):
    """The fake Messages API. ``api_key``: the only key accepted, in ``x-api-key`` or
    ``Authorization: Bearer`` (``None``: any non-empty one).
    ``reply_text`` replaces the default reply's text; ``stream_chunks`` is how many ``text_delta``
    events a text is split into; ``delay_s`` is added before every answer; ``first_token_s`` plays every
    successful answer as a slow first token (:class:`~tests.fakes.script.SlowFirstToken`); ``context_window``
    (tokens) makes longer prompts fail like the real API; ``max_body_bytes`` answers 413 above it;
    ``prefill`` is how a final assistant turn is treated (:data:`~tests.fakes.script.PREFILL_MODES`;
    ``reject``: as Claude Sonnet 4.6 / Opus 4.7 and later); ``record=False`` keeps no request log;
    ``batch_polls``: how many retrieves a Message Batch stays ``in_progress`` (see ``tests/fakes/batches.py``)."""

    flap_failure: Step = Fault(529)
    preamble_events = 3  # message_start, content_block_start, ping
    # named, so that SDKs try to parse it (they skip events whose name they do not know)
    stream_garbage = b"event: content_block_delta\ndata: {not json\n\n"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        reply_text: str | None = None,
        stream_chunks: int = 6,
        delay_s: float = 0.0,
        first_token_s: float = 0.0,
        context_window: int | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
        prefill: str = "continue",
        record: bool = True,
        batch_polls: int = 1,
    ) -> None:
        super().__init__(record=record)
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {PREFILL_MODES}, not {prefill!r}")
        self.prefill = prefill
        self.api_key = api_key
        self.reply_text = reply_text
        self.stream_chunks = stream_chunks
        self.delay_s = delay_s
        self.first_token_s = first_token_s
        self.context_window = context_window
        self.max_body_bytes = max_body_bytes
        self.batches = MessageBatches(self, new_id, ERROR_TYPES, polls=batch_polls)
        self._cached: set[str] = set()  # digests of the prompt prefixes cached so far
        self.app = self._build_app(
            [
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                *self.batches.routes(),
            ]
        )

    # -- routes ---------------------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        return await self._handle(request, count_only=False)

    async def _count_tokens(self, request: Request) -> Response:
        return await self._handle(request, count_only=True)

    async def _handle(self, request: Request, *, count_only: bool) -> Response:
        raw = await request.body()
        rec = self._record(request, raw)
        rejection = self._check_headers(rec.headers, len(raw))
        if rejection is None:
            if not isinstance(rec.body, dict):
                rejection = self._error(400, None, "There was an error parsing the body: expected a JSON object")
            else:
                rejection = self._validate(rec.body, count_only=count_only)
        if rejection is not None:
            self._count("rejected")
            return rejection
        body: dict[str, Any] = rec.body
        try:
            step = self._next_step(rec, text_of(last_user(body).get("content", "")), queued=not count_only)
        except ScriptError as exc:
            self._count("rejected")
            return self._error(400, None, f"fake: {exc}")
        if count_only:
            if isinstance(step, Fault):
                return self._fault(step)
            return Response(
                json.dumps({"input_tokens": estimate_tokens(prompt_text(body))}),
                media_type="application/json",
                headers=self._headers(),
            )
        if self.context_window is not None:
            used = estimate_tokens(prompt_text(body))
            if used > self.context_window and step is None:
                step = ContextLength(prompt_tokens=used, limit=self.context_window)
        return await self._play(request, body, step, stream=body.get("stream") is True)

    # -- validation -----------------------------------------------------------------------------

    def _check_headers(self, headers: Mapping[str, str], size: int) -> Response | None:
        key = headers.get("x-api-key", "")
        if not key:  # the SDK (2.x) sends its API key as a bearer token, which the real API accepts
            scheme, _, key = headers.get("authorization", "").partition(" ")
            key = key.strip() if scheme.lower() == "bearer" else ""
        if not key:
            return self._error(401, None, "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return self._error(401, None, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self._error(400, None, "anthropic-version: header is required")
        if size > self.max_body_bytes:
            return self._error(413, None, None)
        return None

    def _validate(self, body: Mapping[str, Any], *, count_only: bool) -> Response | None:
        def bad(message: str) -> Response:
            return self._error(400, None, message)

        if not isinstance(body.get("model"), str) or not body["model"]:
            return bad("model: Field required")
        if not count_only:
            max_tokens = body.get("max_tokens")
            if max_tokens is None:
                return bad("max_tokens: Field required")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
                return bad("max_tokens: Input should be a valid integer")
            if max_tokens < 1:
                return bad("max_tokens: Input should be greater than or equal to 1")
            if "stream" in body and not isinstance(body["stream"], bool):
                return bad("stream: Input should be a valid boolean")
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1):
            return bad("temperature: range: 0..1")
        messages = body.get("messages")
        if messages is None:
            return bad("messages: Field required")
        if not isinstance(messages, list):
            return bad("messages: Input should be a valid list")
        if not messages:
            return bad("messages: at least one message is required")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                return bad(f"messages.{i}: Input should be a valid dictionary")
            role = message.get("role")
            if role == "system":
                return bad(
                    'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                    'parameter, not "system" as an input message role.'
                )
            if role not in ("user", "assistant"):
                return bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if "content" not in message:
                return bad(f"messages.{i}.content: Field required")
            content = message.get("content")
            for j, block in enumerate(content if isinstance(content, list) else []):
                if isinstance(block, dict) and block.get("type") == "thinking":
                    text, sig = block.get("thinking"), block.get("signature")
                    if not isinstance(sig, str):
                        return bad(f"messages.{i}.content.{j}.thinking.signature: Field required")
                    if not isinstance(text, str) or not hmac.compare_digest(sig, signature(text)):
                        return bad(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
                redacted = isinstance(block, dict) and block.get("type") == "redacted_thinking"
                if redacted and not isinstance(block.get("data"), str):
                    return bad(f"messages.{i}.content.{j}.redacted_thinking.data: Field required")
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < THINKING_MIN_BUDGET:
                return bad(
                    f"thinking.enabled.budget_tokens: Input should be greater than or equal to {THINKING_MIN_BUDGET}"
                )
            if not count_only and budget >= int(body.get("max_tokens") or 0):
                return bad("`max_tokens` must be greater than `thinking.budget_tokens`")
        return None

    # -- dialect hooks --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"request-id": new_id("req_")}

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
        kind = error_type or ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        request_id = new_id("req_")
        body = {
            "type": "error",
            "error": {"type": kind, "message": message or ERROR_MESSAGES.get(kind, kind)},
            "request_id": request_id,
        }
        return Response(
            json.dumps(body),
            status_code=status,
            media_type="application/json",
            headers={"request-id": request_id, **(headers or {})},
        )

    def _context_length(self, step: ContextLength) -> Response:
        return self._error(
            400, "invalid_request_error", f"prompt is too long: {step.prompt_tokens} tokens > {step.limit} maximum"
        )

    def _stream_error_events(self, step: StreamError) -> list[bytes]:
        return [sse("error", {"type": "error", "error": {"type": step.error_type, "message": step.message}})]

    def _stream_error_status(self, step: StreamError) -> int:
        return STATUS_OF_TYPE.get(step.error_type, 500)

    def _render_message(self, body: dict[str, Any], step: Reply | Refusal | None) -> dict[str, Any]:
        """The Message object a batch's request gets (``Message.to_dict``)."""
        return self._render(body, step).to_dict()

    def _render(self, body: dict[str, Any], step: Reply | Refusal | None) -> Message:
        content: list[dict[str, Any]]
        stop_reason: str | None = None
        stop_sequence: str | None = None
        if isinstance(step, Refusal):
            content, stop_reason = ([{"type": "text", "text": step.text}] if step.text else []), "refusal"
        elif step is not None and (step.text is not None or step.tool_use is not None):
            content = [{"type": "text", "text": step.text}] if step.text else []
            for call in step.tool_use or []:
                content.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or new_id("toolu_")),
                        "name": str(call["name"]),
                        "input": dict(call.get("input") or {}),
                    }
                )
        else:
            content = self._default_content(body)
        prefix = self._continuing(body)
        if prefix is not None and content and content[0]["type"] == "text" and not isinstance(step, Refusal):
            content = [{"type": "text", "text": continued(content[0]["text"], prefix)}, *content[1:]]
        if step is not None and not isinstance(step, Refusal) and step.stop_reason:
            stop_reason = _STOP_FROM_OPENAI.get(step.stop_reason, step.stop_reason)
        if stop_reason is None:
            content, stop_reason, stop_sequence = self._natural_stop(body, content)
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled" and not isinstance(step, Refusal):
            thought = f"The user wrote: {text_of(last_user(body).get('content', ''))[:40]}. A short answer will do."
            content = [{"type": "thinking", "thinking": thought, "signature": signature(thought)}, *content]
        output = sum(
            estimate_tokens(b["text"])
            if b["type"] == "text"
            else estimate_tokens(b["thinking"])
            if b["type"] == "thinking"
            else estimate_tokens(json.dumps(b["input"]))
            for b in content
        )
        total = estimate_tokens(prompt_text(body))
        written, read = self._cache(body, total)
        usage: dict[str, Any] = {
            "input_tokens": total - written - read,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": max(1, output),
            "service_tier": "standard",
        }
        if step is not None and not isinstance(step, Refusal) and step.usage:
            usage.update(step.usage)
        return Message(
            new_id("msg_"), str(body["model"]), content, stop_reason, stop_sequence, usage, self.stream_chunks
        )

    def _cache(self, body: Mapping[str, Any], total: int) -> tuple[int, int]:
        """(tokens written to the cache, tokens read from it) for this prompt: its prefix up to the last
        ``cache_control`` breakpoint."""
        parts = _breakpoints(body)
        last = max((i for i, p in enumerate(parts) if isinstance(p, dict) and "cache_control" in p), default=-1)
        if last < 0:
            return 0, 0
        prefix = json.dumps(parts[: last + 1], sort_keys=True)
        tools = body.get("tools") or []
        covered = [
            json.dumps(p, sort_keys=True) if p in tools else p if isinstance(p, str) else text_of([p])
            for p in parts[: last + 1]
        ]
        tokens = min(total, max(1, estimate_tokens("\n".join(covered))))
        digest = hashlib.sha256(prefix.encode()).hexdigest()
        with self._lock:
            seen = digest in self._cached
            self._cached.add(digest)
        return (0, tokens) if seen else (tokens, 0)

    # -- the default reply ----------------------------------------------------------------------

    def _default_content(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        choice = body.get("tool_choice") or {}
        if tools and isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
            tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
            args = synthesize(tool.get("input_schema") or {"type": "object"})
            return [
                {
                    "type": "tool_use",
                    "id": new_id("toolu_"),
                    "name": str(tool.get("name", "tool")),
                    "input": args if isinstance(args, dict) else {},
                }
            ]
        content = last_user(body).get("content", "")
        results = (
            [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(content, list)
            else []
        )
        if results:
            text = f"Fake Claude got the tool result: {text_of(results[-1].get('content', ''))[:60]}"
        elif self.reply_text is not None:
            text = self.reply_text
        else:
            text = f"Hello from fake Claude. You said: {text_of(content)[:40]}"
        return [{"type": "text", "text": text}]

    def _natural_stop(
        self, body: Mapping[str, Any], content: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str, str | None]:
        """Apply ``stop_sequences`` then ``max_tokens`` to the text blocks; pick the stop reason."""
        if any(b["type"] == "tool_use" for b in content):
            return content, "tool_use", None
        stops = [s for s in body.get("stop_sequences") or [] if isinstance(s, str)]
        budget = int(body.get("max_tokens") or 1)
        out: list[dict[str, Any]] = []
        for block in content:
            text, matched = apply_stop(block["text"], stops)
            if matched is not None:
                out.append({"type": "text", "text": text})
                return out, "stop_sequence", matched
            if estimate_tokens(text) > budget:
                out.append({"type": "text", "text": truncate_to_tokens(text, budget)})
                return out, "max_tokens", None
            budget -= estimate_tokens(text)
            out.append(block)
        return out, "end_turn", None
