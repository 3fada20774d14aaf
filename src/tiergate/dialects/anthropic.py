"""The Anthropic Messages edge: wire request -> :class:`ChatRequest`; results -> wire JSON and SSE events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tiergate.dialects.anthropic_wire import AMessage, ARequest, ATextBlock, AToolResultBlock, AToolUseBlock
from tiergate.dialects.common import check_max_tokens, check_tool_results, validate
from tiergate.errors import InvalidRequest, TiergateError
from tiergate.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
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
from tiergate.wire.anthropic import tool_use_block

FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def system_text(system: str | list[ATextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    return "\n\n".join(b.text for b in system) or None


def _tool_result(block: AToolResultBlock) -> ToolResult:
    if block.content is None or isinstance(block.content, str):
        content = block.content or ""
    else:
        content = "".join(b.text for b in block.content if isinstance(b, ATextBlock))
    return ToolResult(block.tool_use_id, content, block.is_error)


def convert_messages(wire: list[AMessage]) -> list[Message]:
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
            else:
                parts.append(ImagePart(dict(block.source)))
        open_calls = {p.id for p in parts if isinstance(p, ToolCall)}
        if results:
            out.append(Message("tool", tuple(results)))
        if parts:
            out.append(Message(m.role, tuple(parts)))
    return out


def parse_request(data: Any, headers: Mapping[str, str], max_tokens_limit: int) -> ChatRequest:
    """``data``: the body as :mod:`tiergate.api.intake` decoded and checked it."""
    wire = validate(ARequest, data)
    check_max_tokens(wire.max_tokens, max_tokens_limit, "max_tokens")
    tools = tuple(ToolSpec(t.name, t.description or "", t.input_schema) for t in wire.tools or ())
    choice: ToolChoice | None = None
    if wire.tool_choice is not None:
        tc = wire.tool_choice
        if tc.type == "tool" and not tc.name:
            raise InvalidRequest("tool_choice.name: required when tool_choice.type is 'tool'")
        if tc.type in ("any", "tool") and not tools:
            raise InvalidRequest("tool_choice: requires tools to be given", param="tool_choice")
        if tc.name and tc.name not in {t.name for t in tools}:
            raise InvalidRequest(f"tool_choice.name: no tool named {tc.name!r} in tools")
        choice = ToolChoice(tc.type, tc.name)
    metadata = wire.metadata.model_dump(exclude_none=True) if wire.metadata else {}
    return ChatRequest(
        model=wire.model,
        messages=convert_messages(wire.messages),
        system=system_text(wire.system),
        max_tokens=wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        stop=tuple(wire.stop_sequences or ()),
        user=metadata.get("user_id"),
        tools=tools,
        tool_choice=choice,
        stream=wire.stream,
        metadata=metadata,
        forward_headers={h: headers[h] for h in FORWARDED_HEADERS if h in headers},
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


def render_error(exc: TiergateError) -> JSON:
    return {"type": "error", "error": {"type": exc.kind, "message": exc.message}}


def _sse(event: str, data: JSON) -> bytes:
    return f"event: {event}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class StreamRenderer:
    """Canonical stream events -> Anthropic's SSE event sequence.

    message_start, then per content block: content_block_start, (ping after the first), deltas,
    content_block_stop; then message_delta (stop_reason, usage) and message_stop.
    """

    def __init__(self, request_id: str, model: str, input_tokens: int = 0) -> None:
        self._id = f"msg_{request_id}"
        self._model = model
        self._input_tokens = input_tokens
        self._index = -1
        self._open: str | None = None  # "text" | "tool_use" | None
        self._pinged = False

    def start(self) -> bytes:
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
        self._open = kind
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
        if isinstance(ev, TextDelta):
            out = b"" if self._open == "text" else self._open_block({"type": "text", "text": ""}, "text")
            return out + self._delta({"type": "text_delta", "text": ev.text})
        if isinstance(ev, ToolCallStart):
            block = {"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}
            return self._open_block(block, "tool_use")
        if isinstance(ev, ToolArgsDelta):
            return self._delta({"type": "input_json_delta", "partial_json": ev.partial_json})
        return self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        out = b"" if self._index >= 0 else self._open_block({"type": "text", "text": ""}, "text")
        out += self._close_block()
        delta = {"stop_reason": ev.stop_reason.value, "stop_sequence": ev.stop_sequence}
        usage = usage_json(ev.usage)
        out += _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + _sse("message_stop", {"type": "message_stop"})

    def error(self, exc: TiergateError) -> bytes:
        return _sse("error", render_error(exc))
