"""The Anthropic Messages edge: wire request -> :class:`ChatRequest`; results -> wire JSON and SSE events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tiergate.dialects.anthropic_wire import (
    CANONICAL_FIELDS,
    ABlock,
    ACountTokensRequest,
    ADocumentBlock,
    AImageBlock,
    AMessage,
    ANestedBlock,
    ARequest,
    ASearchResultBlock,
    ATextBlock,
    ATool,
    AToolChoice,
    AToolResultBlock,
    AToolUseBlock,
)
from tiergate.dialects.common import check_max_tokens, check_tool_results, feature_name, validate
from tiergate.errors import InvalidRequest, TiergateError, UpstreamError
from tiergate.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    Dialect,
    ImagePart,
    Message,
    Native,
    NativeEvent,
    Part,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Usage,
)
from tiergate.wire.anthropic import READ_BLOCKS, is_claude_model, texts_of, tool_use_block

#: Headers of the caller's that reach Anthropic backends: every ``anthropic-*`` one (``anthropic-version``,
#: ``anthropic-beta``, ...), streams and token counts included.
FORWARDED_PREFIX = "anthropic-"


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(FORWARDED_PREFIX)}


def system_text(system: str | list[ATextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    return "\n\n".join(b.text for b in system) or None


def _dump(block: ABlock | ANestedBlock) -> JSON:
    return block.model_dump(exclude_none=True)


def _text_of(block: ADocumentBlock | ASearchResultBlock) -> str:
    """A document's or search result's texts (title, context, a text source), as one text part."""
    return "\n\n".join(t for t in texts_of([_dump(block)]) if t)


def _tool_result(block: AToolResultBlock) -> ToolResult:
    if block.content is None or isinstance(block.content, str):
        content = block.content or ""
    else:
        content = "".join(texts_of([_dump(b) for b in block.content if not isinstance(b, AImageBlock)]))
    return ToolResult(block.tool_use_id, content, block.is_error)


def convert_messages(wire: list[AMessage]) -> list[Message]:
    """The turns as the canonical model holds them: blocks it does not read (thinking, server tools' blocks) are
    left out (the native body keeps them); documents and search results become their text."""
    out: list[Message] = []
    open_calls: set[str] = set()
    if wire[0].role != "user":
        raise InvalidRequest("messages.0.role: the first message must use the user role", param="messages.0.role")
    for i, m in enumerate(wire):
        where = f"messages.{i}"
        if isinstance(m.content, str):
            if m.role == "user" and not m.content:
                raise InvalidRequest(f"{where}.content: user messages must have non-empty content", param=where)
            out.append(Message.text(m.role, m.content))
            open_calls = set()
            continue
        if not m.content and m.role == "user":
            raise InvalidRequest(f"{where}.content: user messages must have non-empty content", param=where)
        results: list[Part] = []
        parts: list[Part] = []
        for j, block in enumerate(m.content):
            if isinstance(block, AToolResultBlock):
                if m.role != "user":
                    raise InvalidRequest(f"{where}.content.{j}: tool_result blocks belong in user messages")
                check_tool_results(open_calls, block.tool_use_id, f"{where}.content.{j}")
                results.append(_tool_result(block))
            elif isinstance(block, AToolUseBlock):
                if m.role != "assistant":
                    raise InvalidRequest(f"{where}.content.{j}: tool_use blocks belong in assistant messages")
                parts.append(ToolCall(block.id, block.name, json.dumps(block.input)))
            elif isinstance(block, ATextBlock):
                parts.append(TextPart(block.text))
            elif isinstance(block, AImageBlock):
                parts.append(ImagePart(dict(block.source)))
            elif isinstance(block, ADocumentBlock | ASearchResultBlock) and (text := _text_of(block)):
                parts.append(TextPart(text))
        open_calls = {p.id for p in parts if isinstance(p, ToolCall)}
        if results:
            out.append(Message("tool", tuple(results)))
        if parts:
            out.append(Message(m.role, tuple(parts)))
    return out


def _tool_choice(tc: AToolChoice | None, tools: tuple[ToolSpec, ...], named: set[str]) -> ToolChoice | None:
    if tc is None:
        return None
    if tc.type == "tool" and not tc.name:
        raise InvalidRequest("tool_choice.name: required when tool_choice.type is 'tool'")
    if tc.type in ("any", "tool") and not named:
        raise InvalidRequest("tool_choice: requires tools to be given", param="tool_choice")
    if tc.name and tc.name not in named:
        raise InvalidRequest(f"tool_choice.name: no tool named {tc.name!r} in tools")
    if tc.type in ("any", "tool") and (not tools or (tc.name and tc.name not in {t.name for t in tools})):
        return None  # a choice among Anthropic's own tools only: Claude's to honour (the native body has it)
    return ToolChoice(tc.type, tc.name)


def custom_tools(tools: list[ATool]) -> tuple[ToolSpec, ...]:
    """The caller's own tools (with an ``input_schema``); Anthropic's (web search, ...) only Claude knows."""
    return tuple(ToolSpec(t.name, t.description or "", t.input_schema) for t in tools if t.input_schema is not None)


def _blocks(content: object) -> list[JSON]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def unmodelled(raw: JSON, tools: list[ATool]) -> tuple[str, ...]:
    """What the canonical request does not carry, named for the ``x-tiergate-dropped`` header: top-level fields
    it has no place for (``thinking``, ``container``, ...), ``cache_control`` and ``citations`` wherever they
    are, block types it does not read, documents it cannot read as text, images in tool results, and Anthropic's
    own tools (``tool:web_search``)."""
    found = {feature_name(k) for k in raw if k not in CANONICAL_FIELDS}
    if any(isinstance(t, dict) and "cache_control" in t for t in raw.get("tools") or []):
        found.add("cache_control")
    blocks = _blocks(raw.get("system"))
    for message in raw.get("messages") or []:
        if isinstance(message, dict):
            blocks += _blocks(message.get("content"))
    while blocks:
        block = blocks.pop()
        kind = block.get("type")
        if "cache_control" in block:
            found.add("cache_control")
        if block.get("citations") is not None:
            found.add("citations")
        if isinstance(kind, str) and kind not in READ_BLOCKS:
            found.add(feature_name(kind))
        elif kind == "document" and (block.get("source") or {}).get("type") not in ("text", "content"):
            found.add("document")
        elif kind == "tool_result":
            nested = _blocks(block.get("content"))
            found.update("tool_result.image" for b in nested if b.get("type") == "image")
            blocks += nested
    found.update(f"tool:{feature_name(t.name)}" for t in tools if t.input_schema is None)
    return tuple(sorted(found))


def native_body(raw: JSON) -> JSON:
    """The body Claude gets: the caller's, with ``metadata`` cut to ``user_id`` (the one key the Messages API
    takes; tiergate's own ``tiergate_sovereign`` never leaves), and left out when nothing is left of it."""
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict) or set(metadata) <= {"user_id"}:
        return raw
    body = dict(raw)
    if "user_id" in metadata:
        body["metadata"] = {"user_id": metadata["user_id"]}
    else:
        del body["metadata"]
    return body


def parse_request(data: Any, headers: Mapping[str, str], max_tokens_limit: int) -> ChatRequest:
    """``data``: the body as :mod:`tiergate.api.intake` decoded and checked it."""
    raw = data
    wire = validate(ARequest, raw)
    check_max_tokens(wire.max_tokens, max_tokens_limit, "max_tokens")
    all_tools = wire.tools or []
    tools = custom_tools(all_tools)
    choice = _tool_choice(wire.tool_choice, tools, {t.name for t in all_tools})
    metadata = wire.metadata.model_dump(exclude_none=True) if wire.metadata else {}
    messages = convert_messages(wire.messages)
    system = system_text(wire.system)
    no_parallel = wire.tool_choice is not None and wire.tool_choice.disable_parallel_tool_use
    return ChatRequest(
        model=wire.model,
        messages=messages,
        system=system,
        max_tokens=wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        top_k=wire.top_k,
        stop=tuple(wire.stop_sequences or ()),
        user=metadata.get("user_id"),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=False if no_parallel else None,
        stream=wire.stream,
        metadata=metadata,
        forward_headers=forward_headers(headers),
        native=Native(Dialect.ANTHROPIC, native_body(raw), system, tuple(messages)),
        unmodelled=unmodelled(raw, all_tools),
    )


def parse_count_request(data: Any, headers: Mapping[str, str]) -> ChatRequest:
    """A ``count_tokens`` body (decoded and checked by :mod:`tiergate.api.intake`): the prompt of a chat, with its
    own native body (for Claude's own count, by the Claude model it names)."""
    raw = data
    wire = validate(ACountTokensRequest, raw)
    all_tools = wire.tools or []
    tools = custom_tools(all_tools)
    messages = convert_messages(wire.messages)
    system = system_text(wire.system)
    return ChatRequest(
        model=wire.model,
        messages=messages,
        system=system,
        tools=tools,
        tool_choice=_tool_choice(wire.tool_choice, tools, {t.name for t in all_tools}),
        forward_headers=forward_headers(headers),
        claude_model=wire.model if is_claude_model(wire.model) else None,
        native=Native(Dialect.ANTHROPIC, raw, system, tuple(messages)),
    )


# --- outbound ------------------------------------------------------------------------------------


def usage_json(usage: Usage) -> JSON:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def block_json(part: TextPart | ToolCall) -> JSON:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return tool_use_block(part)


def render_response(resp: ChatResponse, request_id: str) -> JSON:
    """The answer in Anthropic's form: Claude's own message as it came, when the backend passed it on."""
    if resp.native is not None:
        return dict(resp.native)
    parts: list[TextPart | ToolCall] = list(resp.parts)
    if resp.refusal and not resp.text:
        parts.insert(0, TextPart(resp.refusal))
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": [block_json(p) for p in parts],
        "stop_reason": resp.stop_reason.value,
        "stop_sequence": resp.stop_sequence,
        "usage": usage_json(resp.usage),
    }


#: Anthropic's error types: an upstream's own (a Claude backend's ``permission_error``) is passed on as the type.
ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    }
)


def render_error(exc: TiergateError) -> JSON:
    """The error envelope. An upstream's machine-readable code reaches the caller: one of Anthropic's error types as
    the ``type`` of a client error (a server error keeps the gateway's: ``overloaded_error``, ``timeout_error``),
    any other (an OpenAI-compatible backend's ``content_policy_violation``) as ``code`` beside it."""
    error: JSON = {"type": exc.kind, "message": exc.message}
    code = exc.code if isinstance(exc, UpstreamError) else None
    if code in ERROR_TYPES and exc.status < 500:
        error["type"] = code
    elif code is not None and code not in ERROR_TYPES:
        error["code"] = code
    return {"type": "error", "error": error}


def _sse(event: str, data: JSON) -> bytes:
    return f"event: {event}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class StreamRenderer:
    """Canonical stream events -> Anthropic's SSE event sequence.

    message_start, then per content block: content_block_start, (ping after the first), deltas,
    content_block_stop; then message_delta (stop_reason, usage) and message_stop.

    A stream from Claude for an Anthropic caller is Claude's own: its :class:`NativeEvent` s are forwarded as
    they came (message_start, every block, thinking and signature deltas, message_delta...), its text and
    tool-argument deltas written in place, in their blocks. Should it break and be resumed elsewhere, the rest
    comes as canonical events and is written on after the blocks Claude sent. ``start`` writes nothing: the
    first event says whose ``message_start`` opens the stream.
    """

    def __init__(self, request_id: str, model: str, input_tokens: int = 0) -> None:
        self._id = f"msg_{request_id}"
        self._model = model
        self._input_tokens = input_tokens
        self._index = -1
        self._open: str | None = None  # the open block's type ("text", "tool_use", "thinking", ...) or None
        self._open_id: str | None = None  # the open tool_use block's id
        self._started = False
        self._native = False  # Claude's own message_start was forwarded
        self._stopped = False  # Claude's own message_stop was forwarded
        self._pinged = False

    def start(self) -> bytes:
        return b""

    def _begin(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: JSON = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(Usage(input_tokens=self._input_tokens, output_tokens=1)),
        }
        return _sse("message_start", {"type": "message_start", "message": message})

    def _open_block(self, block: JSON, kind: str) -> bytes:
        out = self._close_block()
        self._index += 1
        self._open, self._open_id = kind, block.get("id")
        out += _sse(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )
        if not self._pinged:
            self._pinged = True
            out += _sse("ping", {"type": "ping"})
        return out

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: JSON) -> bytes:
        return _sse("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, NativeEvent):
            return self._forward(ev.data)
        out = self._begin()
        if isinstance(ev, TextDelta):
            if self._open != "text":
                out += self._open_block({"type": "text", "text": ""}, "text")
            return out + self._delta({"type": "text_delta", "text": ev.text})
        if isinstance(ev, ToolCallStart):
            if self._open == "tool_use" and self._open_id == ev.id:
                return out  # Claude's own block start, forwarded already
            return out + self._open_block({"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}, "tool_use")
        if isinstance(ev, ToolArgsDelta):
            return out + self._delta({"type": "input_json_delta", "partial_json": ev.partial_json})
        return out + self._end(ev)

    def _forward(self, data: JSON) -> bytes:
        kind = str(data.get("type", ""))
        if kind == "message_start":
            if self._started:
                return b""  # a second message: a stream restarted elsewhere, whose rest comes as canonical events
            self._started = self._native = self._pinged = True
        elif not self._native:
            return b""  # Claude's events after a canonical start: never mixed in
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            self._index = max(self._index, int(data.get("index", self._index + 1)))
            self._open, self._open_id = str(block.get("type", "")), block.get("id")
        elif kind == "content_block_stop":
            self._open = None
        elif kind == "message_stop":
            self._stopped = True
        return _sse(kind, data)

    def _end(self, ev: StreamEnd) -> bytes:
        if self._stopped:
            return b""  # Claude's own message_delta and message_stop, forwarded already
        out = b"" if self._index >= 0 else self._open_block({"type": "text", "text": ""}, "text")
        out += self._close_block()
        delta = {"stop_reason": ev.stop_reason.value, "stop_sequence": ev.stop_sequence}
        usage = usage_json(ev.usage)
        out += _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + _sse("message_stop", {"type": "message_stop"})

    def error(self, exc: TiergateError) -> bytes:
        return self._begin() + _sse("error", render_error(exc))
