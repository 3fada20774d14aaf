"""Claude through the official ``anthropic`` SDK: the first-party API, AWS Bedrock and Google Vertex.

The three share one request path (``POST /v1/messages``, which the Bedrock and Vertex clients rewrite to
their own URLs); only the client differs, chosen by a small factory per kind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anthropic
import httpx2
from anthropic import AsyncStream
from anthropic.types import MessageTokensCount

from tiergate.backends.base import Capabilities, completes_by_stream, config_of, continues
from tiergate.backends.errors import from_http_error, malformed
from tiergate.backends.http import timeouts
from tiergate.config import AnthropicConfig, BackendConfig, BedrockConfig, VertexConfig
from tiergate.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from tiergate.offload import json_bytes, off_loop
from tiergate.tokens import prompt_chars
from tiergate.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    Dialect,
    EventStream,
    ImagePart,
    Message,
    NativeEvent,
    StopReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
    Usage,
)
from tiergate.wire.anthropic import tool_use_block

DEFAULT_MAX_TOKENS = 4096
#: The first version of each Claude family that rejects an assistant prefill (a final assistant turn); every
#: later version, and every family from Claude 5 on, is taken to reject it too. Older models continue it.
PREFILL_REJECTED_FROM: dict[str, tuple[int, int]] = {"sonnet": (4, 6), "opus": (4, 7)}
#: ``claude-sonnet-4-6``, ``anthropic.claude-opus-4-7-v1:0``, ``claude-haiku-4-5@2025...``: family and version
#: (a minor of one or two digits, so ``claude-sonnet-4-20250514`` is version 4.0).
_MODEL = re.compile(r"claude-(opus|sonnet|haiku)-(\d+)(?:[-.](\d{1,2}))?(?!\d)")
ClientFactory = Callable[
    [BackendConfig], anthropic.AsyncAnthropic | anthropic.AsyncAnthropicBedrock | anthropic.AsyncAnthropicVertex
]


def _block(part: object) -> JSON:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image", "source": dict(part.source)}
    if isinstance(part, ToolCall):
        return tool_use_block(part)
    assert isinstance(part, ToolResult)
    return {"type": "tool_result", "tool_use_id": part.tool_call_id, "content": part.content, "is_error": part.is_error}


def messages_json(messages: list[Message]) -> list[JSON]:
    """Canonical turns -> Anthropic messages; tool results become user turns, same-role turns merge."""
    out: list[JSON] = []
    for m in messages:
        role = "user" if m.role == "tool" else m.role
        blocks = [_block(p) for p in m.parts]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant" and last["content"] and last["content"][-1]["type"] == "text":
        # A prefill to continue: the Messages API rejects a final assistant turn ending in whitespace.
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
    return out


def request_json(req: ChatRequest, model: str, stream: bool) -> JSON:
    body: JSON = {
        "model": model,
        "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages_json(req.messages),
        "stream": stream,
    }
    optional: JSON = {
        "system": req.system,
        "temperature": None if req.temperature is None else min(req.temperature, 1.0),
        "top_p": req.top_p,
        "top_k": req.top_k,
        "stop_sequences": list(req.stop) or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in req.tools
        ]
    if req.tool_choice is not None:
        tc = req.tool_choice
        body["tool_choice"] = {"type": tc.kind, "name": tc.name} if tc.kind == "tool" else {"type": tc.kind}
    if req.parallel_tool_calls is False and req.tools and body.get("tool_choice", {}).get("type") != "none":
        body["tool_choice"] = {**body.get("tool_choice", {"type": "auto"}), "disable_parallel_tool_use": True}
    fmt = req.response_format
    if fmt is not None and fmt.kind != "text":
        # Claude has no generic JSON mode on this path: ask for it plainly (schema included when given).
        schema = f" matching this JSON schema: {json.dumps(fmt.schema)}" if fmt.schema else ""
        note = f"Answer with a single JSON object{schema}, and nothing else."
        body["system"] = f"{req.system}\n\n{note}" if req.system else note
    return body


#: What a token count takes of a Messages body (``max_tokens``, ``stream``, sampling... are a chat's only).
COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"})


def native_json(req: ChatRequest, model: str, stream: bool) -> JSON | None:
    """The caller's own Messages body, for Claude, where the request has one that still says what it says
    (:meth:`tiergate.types.Native.matches`): as it came, with ``model`` set to the model served and ``stream``
    to the call's. ``None``: translate the canonical request instead."""
    native = req.native
    if native is None or native.dialect is not Dialect.ANTHROPIC or not native.matches(req):
        return None
    body = dict(native.body)
    body["model"] = model
    if stream:
        body["stream"] = True
    elif body.get("stream"):
        body["stream"] = False
    return body


def usage_of(data: Mapping[str, Any] | None) -> Usage:
    data = data or {}
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0),
        output_tokens=int(data.get("output_tokens") or 0),
        cache_read_tokens=int(data.get("cache_read_input_tokens") or 0),
        cache_write_tokens=int(data.get("cache_creation_input_tokens") or 0),
    )


#: Claude's stop reasons the canonical model has no word for, by what they mean to a caller of another dialect.
_OTHER_STOPS = {"pause_turn": StopReason.END_TURN, "model_context_window_exceeded": StopReason.MAX_TOKENS}


def _stop_reason(value: str | None) -> StopReason:
    try:
        return StopReason(value or "end_turn")
    except ValueError:
        return _OTHER_STOPS.get(value or "", StopReason.END_TURN)


def parse_message(data: Any, backend: str, native: bool = False) -> ChatResponse:
    """Claude's message (JSON) -> the canonical response; ``native``: keep the message itself to render."""
    try:
        parts: list[TextPart | ToolCall] = []
        for block in data["content"]:
            if block["type"] == "text":
                parts.append(TextPart(block["text"]))
            elif block["type"] == "tool_use":
                parts.append(ToolCall(block["id"], block["name"], json.dumps(block["input"])))
        return ChatResponse(
            id=str(data.get("id", "")),
            model=str(data.get("model", "")),
            parts=parts,
            stop_reason=_stop_reason(data.get("stop_reason")),
            usage=usage_of(data.get("usage")),
            stop_sequence=data.get("stop_sequence"),
            native=data if native else None,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise malformed(backend, f"message has no usable content ({exc!r})") from exc


class RawEvents(AsyncStream[JSON]):
    """A Messages stream's events as Claude sent them (pings included), as JSON; an ``error`` event raises the
    SDK's own error, as the SDK's stream class does."""

    async def __stream__(self) -> AsyncIterator[JSON]:
        try:
            async for sse in self._iter_events():
                if sse.event == "error":
                    try:
                        body: Any = sse.json()
                    except ValueError:
                        body = sse.data
                    raise self._client._make_status_error(f"{body}", body=body, response=self.response)
                if sse.data:
                    data = sse.json()
                    if isinstance(data, dict):
                        yield data
        finally:
            await self.response.aclose()


class StreamReader:
    """Claude's stream events -> canonical events; with ``native``, each event the canonical ones do not carry
    is passed on too, as a :class:`NativeEvent`, in its place (text and tool-argument deltas stay canonical)."""

    def __init__(self, native: bool) -> None:
        self.native = native
        self.usage = Usage()
        self.stop: tuple[StopReason, str | None] | None = None
        self.id: str | None = None
        self.model: str | None = None
        self._tools = 0
        self._block = ""

    def feed(self, data: JSON) -> list[StreamEvent]:
        kind = data.get("type")
        out: list[StreamEvent] = [NativeEvent(Dialect.ANTHROPIC, data)] if self.native else []
        if kind == "message_start":
            message = data["message"]
            self.usage = usage_of(message.get("usage"))
            self.id, self.model = message.get("id"), message.get("model")
        elif kind == "content_block_start":
            block = data["content_block"]
            self._block = str(block.get("type"))
            if self._block == "tool_use":
                out.append(ToolCallStart(self._tools, block["id"], block["name"]))
                self._tools += 1
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta.get("type") == "text_delta":
                return [TextDelta(delta["text"])]
            if delta.get("type") == "input_json_delta" and self._block == "tool_use" and delta.get("partial_json"):
                return [ToolArgsDelta(self._tools - 1, delta["partial_json"])]
        elif kind == "message_delta":
            got = usage_of(data.get("usage"))
            self.usage = Usage(
                input_tokens=got.input_tokens or self.usage.input_tokens,
                output_tokens=got.output_tokens,
                cache_read_tokens=got.cache_read_tokens or self.usage.cache_read_tokens,
                cache_write_tokens=got.cache_write_tokens or self.usage.cache_write_tokens,
            )
            delta = data.get("delta") or {}
            self.stop = (_stop_reason(delta.get("stop_reason")), delta.get("stop_sequence"))
        return out


def translate(backend: str, exc: anthropic.APIError) -> UpstreamError:
    """The SDK's exceptions -> ours, by class and status (the structured body rides along)."""
    if isinstance(exc, anthropic.APITimeoutError):  # the transport's own timeout (ConnectTimeout, ...) is the cause
        cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
        return UpstreamTimeout(f"timed out{cause}", backend=backend)
    if isinstance(exc, anthropic.APIConnectionError):
        return UpstreamUnavailable(f"cannot connect ({exc.__cause__ or exc})", backend=backend)
    if isinstance(exc, anthropic.APIStatusError):
        body = json.dumps(exc.body).encode() if exc.body is not None else b""
        return from_http_error(backend, exc.status_code, exc.response.headers, body)
    return UpstreamUnavailable(f"{type(exc).__name__}: {exc}", backend=backend)


def _first_party(config: BackendConfig) -> anthropic.AsyncAnthropic:
    config = config_of(config, AnthropicConfig)
    key = os.environ.get(config.api_key_env or "ANTHROPIC_API_KEY") or None
    return anthropic.AsyncAnthropic(api_key=key, base_url=config.base_url, max_retries=0, timeout=timeouts(config))


def _bedrock(config: BackendConfig) -> anthropic.AsyncAnthropicBedrock:
    config = config_of(config, BedrockConfig)
    return anthropic.AsyncAnthropicBedrock(
        aws_region=config.region, base_url=config.base_url, max_retries=0, timeout=timeouts(config)
    )


def _vertex(config: BackendConfig) -> anthropic.AsyncAnthropicVertex:
    """Google Vertex: credentials from Application Default Credentials, or an access token in api_key_env."""
    config = config_of(config, VertexConfig)
    kwargs: dict[str, Any] = {"max_retries": 0, "timeout": timeouts(config), "base_url": config.base_url}
    if config.api_key_env and os.environ.get(config.api_key_env):
        kwargs["access_token"] = os.environ[config.api_key_env]
    if config.region:
        kwargs["region"] = config.region
    if config.project_id:
        kwargs["project_id"] = config.project_id
    return anthropic.AsyncAnthropicVertex(**kwargs)


def continues_prefill(model: str) -> bool:
    """Does this Claude model continue a final assistant turn? By :data:`PREFILL_REJECTED_FROM`.

    >>> [continues_prefill(m) for m in ("claude-sonnet-4-5", "claude-sonnet-4-6", "us.anthropic.claude-opus-4-7-v1:0")]
    [True, False, False]
    >>> continues_prefill("claude-opus-4-1-20250805"), continues_prefill("claude-3-5-haiku-latest")
    (True, True)
    """
    found = _MODEL.search(model)
    if found is None:
        return True  # an older naming (claude-3-5-sonnet-...) or an unknown one: a rejection is learned anyway
    family, version = found[1], (int(found[2]), int(found[3] or 0))
    first = PREFILL_REJECTED_FROM.get(family)
    return version[0] < 5 and (first is None or version < first)


class AnthropicBackend:
    capabilities: Capabilities

    def __init__(self, config: BackendConfig, client_factory: ClientFactory = _first_party) -> None:
        self.config = config
        self.model = config.model or "claude-sonnet-4-5"
        prefix = continues(config, continues_prefill(self.model))
        # Message Batches: the first-party API only (Bedrock and Vertex batch through their own storage services).
        self.capabilities = Capabilities(
            continues_prefix=prefix,
            counts_tokens=True,
            images=True,
            native=Dialect.ANTHROPIC,
            ignores=frozenset({"seed"}),
            serves_named_models=client_factory is _first_party,
            message_batches=client_factory is _first_party,
            # A translated request only: the caller's own body is asked whole (Capabilities.complete_by_stream).
            complete_by_stream=completes_by_stream(config, True),
        )
        self._factory = client_factory
        self._client: Any = None

    async def start(self) -> None:
        self._client = self._factory(self.config)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def status(self) -> dict[str, object]:
        return {}

    async def health(self) -> bool:
        # The Messages API has no free probe; liveness comes from passive signals of real traffic.
        return self._client is not None

    def _options(self, req: ChatRequest) -> Any:
        return {"headers": dict(req.forward_headers)} if req.forward_headers else {}

    def model_for(self, req: ChatRequest) -> str:
        """The Claude model the caller named where this backend serves any (Anthropic's API), else its own."""
        return req.claude_model if req.claude_model and self.capabilities.serves_named_models else self.model

    def _body(self, req: ChatRequest, stream: bool) -> tuple[JSON, bool]:
        """The body to send, and whether it is the caller's own (:func:`native_json`)."""
        model = self.model_for(req)
        native = native_json(req, model, stream)
        return (native, True) if native is not None else (request_json(req, model, stream), False)

    async def _payload(self, request: ChatRequest, body: JSON) -> dict[str, Any]:
        """``post``'s body argument: a large one encoded off the event loop (the SDK would copy and encode it on
        the loop). Bedrock and Vertex rewrite the body they are given, so they get it as it is."""
        if self._factory is not _first_party:
            return {"body": body}
        return {"content": await off_loop(prompt_chars(request), lambda: json_bytes(body))}

    async def count_tokens(self, request: ChatRequest) -> int:
        body, _ = self._body(request, False)
        payload = await self._payload(request, {k: v for k, v in body.items() if k in COUNT_FIELDS})
        try:
            result = await self._client.post(
                "/v1/messages/count_tokens", cast_to=MessageTokensCount, options=self._options(request), **payload
            )
        except anthropic.APIError as exc:
            raise translate(self.config.name, exc) from exc
        return int(result.input_tokens)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        body, native = self._body(request, False)
        payload = await self._payload(request, body)
        try:
            data = await self._client.post("/v1/messages", cast_to=object, options=self._options(request), **payload)
        except anthropic.APIError as exc:
            raise translate(self.config.name, exc) from exc
        return parse_message(data, self.config.name, native)

    async def stream(self, request: ChatRequest) -> EventStream:
        name = self.config.name
        body, native = self._body(request, True)
        reader = StreamReader(native)
        payload = await self._payload(request, body)
        try:
            events: RawEvents = await self._client.post(
                "/v1/messages",
                cast_to=object,
                options=self._options(request),
                **payload,
                stream=True,
                stream_cls=RawEvents,
            )
            async with events:
                async for data in events:
                    for ev in reader.feed(data):
                        yield ev
        except anthropic.APIError as exc:
            raise translate(name, exc) from exc
        except httpx2.TimeoutException as exc:  # raised by the SDK's transport while reading the stream
            raise UpstreamTimeout(f"stream timed out ({type(exc).__name__})", backend=name) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(f"stream broke off ({exc})", backend=name) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise malformed(name, f"stream event could not be decoded ({exc!r})") from exc
        if reader.stop is None:
            raise malformed(name, "stream ended without message_delta (truncated)")
        yield StreamEnd(reader.stop[0], reader.usage, reader.stop[1], reader.id, reader.model)


def register(add: Callable[[str, Callable[[BackendConfig], Any]], None]) -> None:
    add("anthropic", AnthropicBackend)
    add("bedrock", lambda c: AnthropicBackend(c, _bedrock))
    add("vertex", lambda c: AnthropicBackend(c, _vertex))
