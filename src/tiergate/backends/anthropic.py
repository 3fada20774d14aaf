"""Claude through the official ``anthropic`` SDK: the first-party API, AWS Bedrock and Google Vertex.

The three share one request path (``POST /v1/messages``, which the Bedrock and Vertex clients rewrite to
their own URLs); only the client differs, chosen by a small factory per kind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
from anthropic import AsyncStream
from anthropic.types import Message as AMessage
from anthropic.types import MessageTokensCount, RawMessageStreamEvent

from tiergate.backends.base import Capabilities, config_of, continues
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
    EventStream,
    ImagePart,
    Message,
    StopReason,
    StreamEnd,
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
    fmt = req.response_format
    if fmt is not None and fmt.kind != "text":
        # Claude has no generic JSON mode on this path: ask for it plainly (schema included when given).
        schema = f" matching this JSON schema: {json.dumps(fmt.schema)}" if fmt.schema else ""
        note = f"Answer with a single JSON object{schema}, and nothing else."
        body["system"] = f"{req.system}\n\n{note}" if req.system else note
    return body


def usage_of(data: Any) -> Usage:
    return Usage(
        input_tokens=int(getattr(data, "input_tokens", 0) or 0),
        output_tokens=int(getattr(data, "output_tokens", 0) or 0),
        cache_read_tokens=int(getattr(data, "cache_read_input_tokens", 0) or 0),
        cache_write_tokens=int(getattr(data, "cache_creation_input_tokens", 0) or 0),
    )


def _stop_reason(value: str | None) -> StopReason:
    try:
        return StopReason(value or "end_turn")
    except ValueError:
        return StopReason.END_TURN  # e.g. pause_turn: the turn ended without a stop we model


def parse_message(msg: AMessage) -> ChatResponse:
    parts: list[TextPart | ToolCall] = []
    for block in msg.content:
        if block.type == "text":
            parts.append(TextPart(block.text))
        elif block.type == "tool_use":
            parts.append(ToolCall(block.id, block.name, json.dumps(block.input)))
    return ChatResponse(
        id=msg.id,
        model=msg.model,
        parts=parts,
        stop_reason=_stop_reason(msg.stop_reason),
        usage=usage_of(msg.usage),
        stop_sequence=msg.stop_sequence,
    )


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
        self.capabilities = Capabilities(continues_prefix=prefix, counts_tokens=True, images=True)
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

    async def _body(self, request: ChatRequest, build: Callable[[], JSON]) -> dict[str, Any]:
        """``post``'s body argument: a large one built and encoded off the event loop (the SDK would copy and
        encode it on the loop). Bedrock and Vertex rewrite the body they are given, so they get it as it is."""
        if self._factory is not _first_party:
            return {"body": build()}
        return {"content": await off_loop(prompt_chars(request), lambda: json_bytes(build()))}

    async def count_tokens(self, request: ChatRequest) -> int:
        def build() -> JSON:
            body = request_json(request, self.model, False)
            return {k: body[k] for k in ("model", "messages", "system", "tools") if k in body}

        payload = await self._body(request, build)
        try:
            result = await self._client.post(
                "/v1/messages/count_tokens", cast_to=MessageTokensCount, options=self._options(request), **payload
            )
        except anthropic.APIError as exc:
            raise translate(self.config.name, exc) from exc
        return int(result.input_tokens)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        payload = await self._body(request, lambda: request_json(request, self.model, False))
        try:
            msg = await self._client.post("/v1/messages", cast_to=AMessage, options=self._options(request), **payload)
        except anthropic.APIError as exc:
            raise translate(self.config.name, exc) from exc
        return parse_message(msg)

    async def stream(self, request: ChatRequest) -> EventStream:
        name = self.config.name
        usage = Usage()
        stop: tuple[StopReason, str | None] | None = None
        tools = 0
        payload = await self._body(request, lambda: request_json(request, self.model, True))
        try:
            events: AsyncStream[RawMessageStreamEvent] = await self._client.post(
                "/v1/messages",
                cast_to=AMessage,
                options=self._options(request),
                **payload,
                stream=True,
                stream_cls=AsyncStream[RawMessageStreamEvent],
            )
            async with events:
                async for ev in events:
                    if ev.type == "message_start":
                        usage = usage_of(ev.message.usage)
                    elif ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                        yield ToolCallStart(tools, ev.content_block.id, ev.content_block.name)
                        tools += 1
                    elif ev.type == "content_block_delta":
                        if ev.delta.type == "text_delta":
                            yield TextDelta(ev.delta.text)
                        elif ev.delta.type == "input_json_delta" and ev.delta.partial_json:
                            yield ToolArgsDelta(tools - 1, ev.delta.partial_json)
                    elif ev.type == "message_delta":
                        out = usage_of(ev.usage)
                        usage = Usage(
                            input_tokens=out.input_tokens or usage.input_tokens,
                            output_tokens=out.output_tokens,
                            cache_read_tokens=out.cache_read_tokens or usage.cache_read_tokens,
                            cache_write_tokens=out.cache_write_tokens or usage.cache_write_tokens,
                        )
                        stop = (_stop_reason(ev.delta.stop_reason), ev.delta.stop_sequence)
        except anthropic.APIError as exc:
            raise translate(name, exc) from exc
        except httpx2.TimeoutException as exc:  # raised by the SDK's transport while reading the stream
            raise UpstreamTimeout(f"stream timed out ({type(exc).__name__})", backend=name) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(f"stream broke off ({exc})", backend=name) from exc
        except (ValueError, KeyError) as exc:
            raise malformed(name, f"stream event could not be decoded ({exc})") from exc
        if stop is None:
            raise malformed(name, "stream ended without message_delta (truncated)")
        yield StreamEnd(stop[0], usage, stop[1])


def register(add: Callable[[str, Callable[[BackendConfig], Any]], None]) -> None:
    add("anthropic", AnthropicBackend)
    add("bedrock", lambda c: AnthropicBackend(c, _bedrock))
    add("vertex", lambda c: AnthropicBackend(c, _vertex))
