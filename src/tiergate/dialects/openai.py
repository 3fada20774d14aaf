"""The OpenAI Chat Completions edge: wire request -> :class:`ChatRequest`; results -> wire JSON and SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tiergate.dialects.common import check_arguments, check_max_tokens, check_tool_results, feature_name, validate
from tiergate.dialects.openai_wire import CANONICAL_FIELDS, OAContentPart, OAMessage, OARequest
from tiergate.errors import InvalidRequest, TiergateError, UpstreamError
from tiergate.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    NativeEvent,
    Part,
    ResponseFormat,
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
from tiergate.wire.openai import FINISH_REASON, image_source, tool_call_json

# --- inbound -------------------------------------------------------------------------------------


def _text_of(content: str | list[OAContentPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if any(p.type != "text" for p in content):
        raise InvalidRequest(f"{where}: only text content is allowed in this role", param=where)
    return "".join(p.text or "" for p in content)


def _user_parts(content: str | list[OAContentPart] | None, where: str) -> tuple[Part, ...]:
    if content is None:
        raise InvalidRequest(f"{where}: a user message needs content", param=where)
    if isinstance(content, str):
        return (TextPart(content),)
    parts: list[Part] = []
    for i, p in enumerate(content):
        if p.type == "text":
            if p.text is None:
                raise InvalidRequest(f"{where}.{i}.text: required field is missing", param=f"{where}.{i}.text")
            parts.append(TextPart(p.text))
        else:
            if p.image_url is None:
                raise InvalidRequest(f"{where}.{i}.image_url: required field is missing")
            parts.append(ImagePart(image_source(p.image_url.url)))
    return tuple(parts)


def _messages(wire: list[OAMessage]) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    out: list[Message] = []
    open_calls: set[str] = set()
    for i, m in enumerate(wire):
        where = f"messages.{i}"
        if m.role in ("system", "developer"):
            system.append(_text_of(m.content, f"{where}.content"))
            continue
        if m.role == "tool":
            if m.tool_call_id is None:
                raise InvalidRequest(f"{where}.tool_call_id: required field is missing", param=where)
            check_tool_results(open_calls, m.tool_call_id, where)
            out.append(Message("tool", (ToolResult(m.tool_call_id, _text_of(m.content, where)),)))
            continue
        open_calls = set()
        if m.role == "user":
            out.append(Message("user", _user_parts(m.content, f"{where}.content")))
            continue
        parts: list[Part] = []
        text = _text_of(m.content, f"{where}.content")
        if text:
            parts.append(TextPart(text))
        for j, call in enumerate(m.tool_calls or ()):
            check_arguments(call.function.arguments, f"{where}.tool_calls.{j}.function.arguments")
            parts.append(ToolCall(call.id, call.function.name, call.function.arguments or "{}"))
            open_calls.add(call.id)
        if not parts:
            raise InvalidRequest(f"{where}: an assistant message needs content or tool_calls", param=where)
        out.append(Message("assistant", tuple(parts)))
    if not out:
        raise InvalidRequest("messages: at least one user message is required", param="messages")
    return ("\n\n".join(system) if system else None), out


def unmodelled(raw: JSON, wire: OARequest) -> tuple[str, ...]:
    """What the canonical request does not carry, named for ``x-tiergate-dropped``: top-level fields it has no
    place for (``presence_penalty``, ``logit_bias``, ``reasoning_effort``...), messages' ``name``, images'
    ``detail``."""
    found = {feature_name(k) for k in raw if k not in CANONICAL_FIELDS}
    if any(m.name is not None for m in wire.messages):
        found.add("messages.name")
    for m in wire.messages:
        if isinstance(m.content, list) and any(p.image_url is not None and p.image_url.detail for p in m.content):
            found.add("image_url.detail")
    return tuple(sorted(found))


def parse_request(data: Any, headers: Mapping[str, str], max_tokens_limit: int) -> ChatRequest:
    """``data``: the body as :mod:`tiergate.api.intake` decoded and checked it."""
    raw = data
    wire = validate(OARequest, raw)
    max_tokens = wire.max_completion_tokens or wire.max_tokens
    check_max_tokens(max_tokens, max_tokens_limit, "max_tokens")
    system, messages = _messages(wire.messages)
    tools = tuple(
        ToolSpec(t.function.name, t.function.description or "", t.function.parameters or {"type": "object"})
        for t in wire.tools or ()
    )
    tool_choice: ToolChoice | None = None
    if isinstance(wire.tool_choice, str):
        tool_choice = ToolChoice({"none": "none", "auto": "auto", "required": "any"}[wire.tool_choice])  # type: ignore[arg-type]
    elif wire.tool_choice is not None:
        tool_choice = ToolChoice("tool", wire.tool_choice.function.name)
    if tool_choice and tool_choice.kind in ("any", "tool") and not tools:
        raise InvalidRequest("tool_choice: requires tools to be given", param="tool_choice")
    if tool_choice and tool_choice.name and tool_choice.name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice: no tool named {tool_choice.name!r} in tools", param="tool_choice")
    fmt: ResponseFormat | None = None
    if wire.response_format is not None:
        rf = wire.response_format
        if rf.type == "json_schema":
            if rf.json_schema is None or rf.json_schema.schema_ is None:
                raise InvalidRequest("response_format.json_schema.schema: required field is missing")
            fmt = ResponseFormat("json_schema", rf.json_schema.schema_, rf.json_schema.name)
        else:
            fmt = ResponseFormat(rf.type)
    stop = (wire.stop,) if isinstance(wire.stop, str) else tuple(wire.stop or ())
    if wire.top_logprobs is not None and not wire.logprobs:
        raise InvalidRequest("top_logprobs: requires logprobs to be true", param="top_logprobs")
    return ChatRequest(
        model=wire.model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        stop=stop,
        seed=wire.seed,
        user=wire.user,
        tools=tools,
        tool_choice=tool_choice,
        response_format=fmt,
        stream=wire.stream,
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        metadata=dict(wire.metadata or {}),
        parallel_tool_calls=wire.parallel_tool_calls,
        logprobs=(wire.top_logprobs or 0) if wire.logprobs else None,
        unmodelled=unmodelled(raw, wire),
    )


# --- outbound: responses ---------------------------------------------------------------------------


def usage_json(usage: Usage) -> JSON:
    out: JSON = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    if usage.cache_read_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    return out


def render_response(resp: ChatResponse, request_id: str) -> JSON:
    message: JSON = {"role": "assistant", "content": resp.text or None, "refusal": resp.refusal}
    if resp.tool_calls:
        message["tool_calls"] = [tool_call_json(c) for c in resp.tool_calls]
    elif message["content"] is None and resp.refusal is None:
        message["content"] = ""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASON[resp.stop_reason],
                "logprobs": resp.logprobs,
            }
        ],
        "usage": usage_json(resp.usage),
    }


def render_error(exc: TiergateError) -> JSON:
    code: str | None = None
    if exc.status == 404:
        code = "model_not_found"
    elif exc.status == 401:
        code = "invalid_api_key"
    err_type = {401: "authentication_error", 429: "rate_limit_exceeded"}.get(exc.status)
    if err_type is None:
        err_type = "invalid_request_error" if exc.status < 500 else "server_error"
    if isinstance(exc, UpstreamError) and exc.status >= 500:
        err_type = {502: "upstream_error", 503: "service_unavailable", 504: "timeout"}.get(exc.status, err_type)
    if isinstance(exc, UpstreamError) and code is None:
        code = exc.code  # the upstream's own code (content_policy_violation, Anthropic's permission_error, ...)
    param = getattr(exc, "param", None)
    return {"error": {"message": exc.message, "type": err_type, "param": param, "code": code}}


class StreamRenderer:
    """Canonical stream events -> OpenAI ``chat.completion.chunk`` SSE lines."""

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        self._base = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._include_usage = include_usage

    def _chunk(self, delta: JSON, finish: str | None = None, logprobs: JSON | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        payload = {**self._base, "choices": [choice]}
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._chunk({"content": ev.text}, logprobs=None if ev.logprobs is None else {"content": ev.logprobs})
        if isinstance(ev, ToolCallStart):
            fn = {"name": ev.name, "arguments": ""}
            return self._chunk({"tool_calls": [{"index": ev.index, "id": ev.id, "type": "function", "function": fn}]})
        if isinstance(ev, ToolArgsDelta):
            return self._chunk({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.partial_json}}]})
        if isinstance(ev, NativeEvent):
            return b""  # another dialect's own event (never sent for an OpenAI caller)
        return self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        out = self._chunk({}, FINISH_REASON[ev.stop_reason])
        if self._include_usage:
            usage = {**self._base, "choices": [], "usage": usage_json(ev.usage)}
            out += b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self, exc: TiergateError) -> bytes:
        """An error after bytes were sent: an error object, and no ``[DONE]`` that would look like success."""
        return b"data: " + json.dumps(render_error(exc)).encode() + b"\n\n"
