"""Any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp server, LM Studio) over httpx2."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2

from tiergate.backends.base import Capabilities, completes_by_stream, config_of, continues
from tiergate.backends.errors import from_http_error, from_transport_error, malformed
from tiergate.backends.http import timeouts
from tiergate.config import BackendConfig, OpenAIConfig
from tiergate.errors import UpstreamError, UpstreamUnavailable
from tiergate.offload import json_bytes, off_loop
from tiergate.tokens import estimate_prompt_tokens, estimate_tokens, prompt_chars
from tiergate.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    EventStream,
    ImagePart,
    Message,
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
from tiergate.wire.openai import STOP_REASON, image_url, tool_call_json

JSON_CONTENT = {"content-type": "application/json"}


def _message_json(m: Message) -> list[JSON]:
    if m.role == "tool":
        return [
            {"role": "tool", "tool_call_id": p.tool_call_id, "content": p.content}
            for p in m.parts
            if isinstance(p, ToolResult)
        ]
    if m.role == "assistant":
        out: JSON = {"role": "assistant", "content": m.text_content or None}
        if m.tool_calls:
            out["tool_calls"] = [tool_call_json(c) for c in m.tool_calls]
        return [out]
    if all(isinstance(p, TextPart) for p in m.parts):
        return [{"role": "user", "content": m.text_content}]
    content: list[JSON] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            content.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": image_url(p.source)}})
    return [{"role": "user", "content": content}]


def request_json(req: ChatRequest, model: str, stream: bool, continue_final: bool = False) -> JSON:
    messages: list[JSON] = [{"role": "system", "content": req.system}] if req.system else []
    for m in req.messages:
        messages.extend(_message_json(m))
    body: JSON = {"model": model, "messages": messages, "stream": stream}
    if continue_final and req.messages and req.messages[-1].role == "assistant":
        # Continue the final assistant turn instead of starting a new one (vLLM's chat-template options).
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    optional = {
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,  # vLLM, llama.cpp server, TGI and others take it beside OpenAI's own
        "seed": req.seed,
        "user": req.user,
        "stop": list(req.stop) or None,
        "parallel_tool_calls": req.parallel_tool_calls if req.tools else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.logprobs is not None:
        body["logprobs"] = True
        if req.logprobs:
            body["top_logprobs"] = req.logprobs
    if stream:
        body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        tc = req.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": tc.name}}
            if tc.kind == "tool"
            else {"auto": "auto", "none": "none", "any": "required"}[tc.kind]
        )
    fmt = req.response_format
    if fmt is not None and fmt.kind == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.name or "response", "schema": fmt.schema},
        }
    elif fmt is not None:
        body["response_format"] = {"type": fmt.kind}
    return body


def parse_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
        cache_read_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def stopped_by(choice: Any, finish: StopReason, stops: tuple[str, ...]) -> tuple[StopReason, str | None]:
    """The stop reason, and the stop sequence that ended the answer where the server says which (vLLM's
    ``stop_reason``: the matched string); other servers do not say, and a stop there reads ``end_turn``."""
    matched = choice.get("stop_reason") if isinstance(choice, dict) else None
    if finish is StopReason.END_TURN and isinstance(matched, str) and matched in stops:
        return StopReason.STOP_SEQUENCE, matched
    return finish, None


def parse_response(data: Any, model: str, backend: str, stops: tuple[str, ...] = ()) -> ChatResponse:
    try:
        choice = data["choices"][0]
        msg = choice["message"]
        parts: list[TextPart | ToolCall] = []
        if msg.get("content"):
            parts.append(TextPart(msg["content"]))
        for call in msg.get("tool_calls") or ():
            fn = call["function"]
            parts.append(ToolCall(call["id"], fn["name"], fn.get("arguments") or "{}"))
        reason, stop = stopped_by(
            choice, STOP_REASON.get(choice.get("finish_reason") or "stop", StopReason.END_TURN), stops
        )
        usage = parse_usage(data.get("usage"))
        return ChatResponse(
            id=str(data.get("id", "")),
            model=str(data.get("model") or model),
            parts=parts,
            stop_reason=reason,
            usage=usage or Usage(estimated=True),
            stop_sequence=stop,
            refusal=msg.get("refusal"),
            logprobs=choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else None,
        )
    except (KeyError, IndexError, TypeError) as exc:
        raise malformed(backend, f"response has no usable choices[0].message ({exc!r})") from exc


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines; comments and other
    fields skipped), as the SSE specification reads them."""
    buffer: list[str] = []
    async for line in lines:
        if not line:
            if buffer:
                yield "\n".join(buffer)
                buffer = []
        elif line.startswith("data:"):
            buffer.append(line[6:] if line.startswith("data: ") else line[5:])
    if buffer:
        yield "\n".join(buffer)


class InStreamError(Exception):
    def __init__(self, error: JSON) -> None:
        super().__init__(str(error.get("message") or error))
        self.error = error


class StreamParser:
    """OpenAI ``chat.completion.chunk`` payloads -> canonical events (tool-call indices renumbered from 0)."""

    def __init__(self, prompt_chars: int = 0, stops: tuple[str, ...] = ()) -> None:
        self.finish: StopReason | None = None
        self.stop_sequence: str | None = None
        self._stops = stops
        self.usage: Usage | None = None
        self._calls: dict[int, int] = {}
        self._prompt_chars = prompt_chars
        self._deltas = 0
        self.id: str | None = None
        self.model: str | None = None
        self._refusal: list[str] = []

    def feed(self, chunk: Any) -> list[StreamEvent]:
        if not isinstance(chunk, dict):
            raise TypeError("chunk is not an object")
        if isinstance(chunk.get("error"), dict):  # vLLM and others report failures inside the stream
            raise InStreamError(chunk["error"])
        self.usage = parse_usage(chunk.get("usage")) or self.usage
        self.id = self.id or (str(chunk["id"]) if chunk.get("id") else None)
        self.model = self.model or (str(chunk["model"]) if chunk.get("model") else None)
        out: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("refusal"), str):  # OpenAI's refusal text: no event, the answer's end says it
                self._refusal.append(delta["refusal"])
            if delta.get("content"):
                self._deltas += 1
                logprobs = (choice.get("logprobs") or {}).get("content")
                out.append(TextDelta(delta["content"], tuple(logprobs) if isinstance(logprobs, list) else None))
            for call in delta.get("tool_calls") or ():
                upstream_index = int(call.get("index", 0))
                fn = call.get("function") or {}
                if upstream_index not in self._calls:
                    self._calls[upstream_index] = len(self._calls)
                    call_id = call.get("id") or f"call_{len(self._calls)}"
                    out.append(ToolCallStart(self._calls[upstream_index], call_id, fn.get("name") or ""))
                if fn.get("arguments"):
                    self._deltas += 1
                    out.append(ToolArgsDelta(self._calls[upstream_index], fn["arguments"]))
            if choice.get("finish_reason"):
                finish = STOP_REASON.get(choice["finish_reason"], StopReason.END_TURN)
                self.finish, self.stop_sequence = stopped_by(choice, finish, self._stops)
        return out

    def end(self) -> StreamEnd | None:
        if self.finish is None:
            return None
        # No usage from the server: estimate (one token a delta, four characters a prompt token) and say so.
        estimate = Usage(input_tokens=estimate_tokens(self._prompt_chars), output_tokens=self._deltas, estimated=True)
        refusal = "".join(self._refusal) or None
        return StreamEnd(self.finish, self.usage or estimate, self.stop_sequence, self.id, self.model, refusal)


#: Longest a health probe (``GET /models``) may take, connecting included.
HEALTH_TIMEOUT_S = 5.0


class OpenAICompatBackend:
    capabilities: Capabilities

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.model = config.model or "default"
        # Continues a prefix only where configured so: without continue_final_message many servers start over.
        # No token counter: OpenAI-compatible servers have no standard endpoint for one.
        prefix = continues(config, config.continue_final_message is True)
        self.capabilities = Capabilities(
            continues_prefix=prefix, images=True, logprobs=True, complete_by_stream=completes_by_stream(config, True)
        )
        self._continue_final = config.continue_final_message is not False
        self._client: httpx2.AsyncClient | None = None

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            raise RuntimeError("backend not started")
        return self._client

    async def start(self) -> None:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._client = httpx2.AsyncClient(
            base_url=self.config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeouts(self.config),
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=256),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def status(self) -> dict[str, object]:
        return {}

    async def health(self) -> bool:
        try:
            resp = await self.client.get("models", timeout=timeouts(self.config, HEALTH_TIMEOUT_S))
        except httpx2.HTTPError:
            return False
        return resp.status_code < 500

    async def count_tokens(self, request: ChatRequest) -> int:
        raise NotImplementedError(f"backend {self.config.name!r} has no token counter (capabilities.counts_tokens)")

    async def _content(self, request: ChatRequest, stream: bool) -> bytes:
        """The request's JSON body, a large one built and encoded off the event loop."""
        return await off_loop(
            prompt_chars(request),
            lambda: json_bytes(request_json(request, self.model, stream, self._continue_final)),
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        name = self.config.name
        content = await self._content(request, False)
        try:
            resp = await self.client.post("chat/completions", content=content, headers=JSON_CONTENT)
        except httpx2.HTTPError as exc:
            raise from_transport_error(name, exc) from exc
        if resp.status_code >= 400:
            raise from_http_error(name, resp.status_code, resp.headers, resp.content)
        try:
            data = resp.json()
        except ValueError as exc:
            raise malformed(name, "response body is not JSON") from exc
        response = parse_response(data, self.model, name, request.stop)
        if response.usage.estimated:  # no usage from the server: four characters a token, as for streams
            out = len(response.text) + sum(len(c.arguments) for c in response.tool_calls)
            response.usage = Usage(estimate_prompt_tokens(request), estimate_tokens(out), estimated=True)
        return response

    async def stream(self, request: ChatRequest) -> EventStream:
        name = self.config.name
        content = await self._content(request, True)
        parser = StreamParser(prompt_chars(request), request.stop)
        done = False
        try:
            async with self.client.stream("POST", "chat/completions", content=content, headers=JSON_CONTENT) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise from_http_error(name, resp.status_code, resp.headers, resp.content)
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    raise malformed(name, f"stream answered with content-type {resp.headers.get('content-type')!r}")
                async for data in sse_data(resp.aiter_lines()):
                    # Read on past [DONE] to the end of the body, so the connection goes back to the pool.
                    if done or data == "[DONE]":
                        done = True
                        continue
                    try:
                        events = parser.feed(json.loads(data))
                    except InStreamError as exc:
                        code = exc.error.get("code")
                        code = code if isinstance(code, str) and not code.isdigit() else None
                        raise UpstreamUnavailable(f"error inside the stream: {exc}", backend=name, code=code) from exc
                    except (ValueError, TypeError) as exc:
                        raise malformed(name, "stream carried a chunk that is not valid JSON") from exc
                    for ev in events:
                        yield ev
        except UpstreamError:
            raise
        except httpx2.HTTPError as exc:
            raise from_transport_error(name, exc) from exc
        end = parser.end()
        if end is None:
            raise malformed(name, "stream ended without a finish_reason (truncated)")
        yield end


def register(add: Callable[[str, Callable[[BackendConfig], Any]], None]) -> None:
    add("openai", lambda config: OpenAICompatBackend(config_of(config, OpenAIConfig)))
