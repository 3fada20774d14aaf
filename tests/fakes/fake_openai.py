"""A fake OpenAI-compatible Chat Completions server (as vLLM or llama.cpp's server speak it).

Routes: ``POST /v1/chat/completions`` (a ``chat.completion`` object, or ``chat.completion.chunk``
SSE ``data:`` lines ending with ``data: [DONE]``), ``GET /v1/models``, ``GET /health``. Errors use
OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``. ``Authorization: Bearer`` is
checked only when the fake was given a key. It is built to be a cheap upstream for overhead
benchmarks: plain Starlette, ``json``, no pydantic, ids from a counter.

Example::

    from tests.fakes import FakeOpenAI, ContextLength, script_header
    from tests.support.servers import serve_app

    fake = FakeOpenAI(models=["qwen-0.5b"], reply_text="ok", delay_s=0.01)
    with serve_app(fake) as base_url:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0)
        fake.script(ContextLength())           # the next request gets context_length_exceeded
        ...

Without a script the reply is ``"Hello from fake LLM. You said: <first 40 chars>"`` (or
``reply_text``); a tool call with arguments synthesised from the tool's ``parameters`` when
``tool_choice`` is ``"required"`` or names a function; a text mentioning the tool output when the
last message has role ``tool``. ``max_tokens``/``max_completion_tokens`` and ``stop`` truncate the
text (4 characters a token); as vLLM does, the choice's ``stop_reason`` names the stop string that ended it.
With ``logprobs: true`` (and ``top_logprobs``) the choice, or each text chunk, carries ``logprobs.content``, one
entry a word. See ``tests/fakes/script.py`` for the steps.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}
ERROR_MESSAGES: dict[int, str] = {
    400: "Invalid request",
    401: "Invalid API key",
    403: "You are not allowed to access this resource.",
    404: "Not found",
    413: "Request too large",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request.",
    503: "The server is overloaded or not ready yet.",
}
STATUS_OF_TYPE: dict[str, int] = {
    "overloaded_error": 503,
    "service_unavailable_error": 503,
    "rate_limit_error": 429,
    "timeout_error": 504,
}
# Anthropic stop reasons, accepted in Reply.stop_reason for scripts shared between the fakes
_FINISH_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
#: How a context-length rejection looks: OpenAI's (with ``code: "context_length_exceeded"``), vLLM's
#: (OpenAI's envelope, ``type: "BadRequestError"``, ``code: 400``, the reason only in the message) and older
#: vLLM's (the flat ``{"object": "error", ...}`` body, "... is longer than the maximum model length ...").
CONTEXT_ERRORS = ("openai", "vllm", "vllm-legacy")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_DONE = b"data: [DONE]\n\n"
_JSON = "application/json"


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def text_of(content: Any) -> str:
    """The text of a message's ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def prompt_text(body: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                parts.append(_dumps(call))
    for tool in body.get("tools") or []:
        parts.append(_dumps(tool))
    return "\n".join(p for p in parts if p)


def token_logprob(token: str, top: int) -> dict[str, Any]:
    """One token's entry in ``logprobs.content``, as vLLM writes it (the fake's alternatives are made up)."""
    entry: dict[str, Any] = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    alternatives = [entry, *({"token": f"{token}{i}", "logprob": -2.0 - i, "bytes": []} for i in range(1, top))]
    return entry | {"top_logprobs": [dict(a) for a in alternatives[:top]]}


@dataclass
class Completion:
    """A rendered chat completion."""

    id: str
    created: int
    model: str
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, int]
    chunks: int
    include_usage: bool
    stop_reason: str | None = None  # vLLM's: the stop string that ended the answer
    logprobs: int | None = None  # asked for: alternatives per token (top_logprobs)

    def _logprobs(self, text: str) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        return {"content": [token_logprob(t, self.logprobs) for t in re.findall(r"\S+\s*|\s+", text)]}

    def to_json(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return _dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": self._logprobs(self.content or ""),
                        "finish_reason": self.finish_reason,
                        "stop_reason": self.stop_reason,
                    }
                ],
                "usage": self.usage,
                "system_fingerprint": None,
            }
        ).encode()

    def to_events(self) -> list[bytes]:
        head = (
            f'data: {{"id":"{self.id}","object":"chat.completion.chunk","created":{self.created},'
            f'"model":{_dumps(self.model)},'
        )
        tail = ',"usage":null}\n\n' if self.include_usage else "}\n\n"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            logprobs = self._logprobs(delta["content"]) if delta.get("content") else None
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            if finish is not None:
                choice["stop_reason"] = self.stop_reason
            return (head + '"choices":[' + _dumps(choice) + "]" + tail).encode()

        events = [chunk({"role": "assistant", "content": ""})]
        events.extend(chunk({"content": part}) for part in split_text(self.content or "", self.chunks))
        for index, call in enumerate(self.tool_calls):
            function = call["function"]
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": function["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            events.extend(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                for part in split_even(function["arguments"], 3)
            )
        events.append(chunk({}, self.finish_reason))
        if self.include_usage:
            events.append((head + '"choices":[],"usage":' + _dumps(self.usage) + "}\n\n").encode())
        events.append(_DONE)
        return events


class FakeOpenAI(FakeUpstream):
    """The fake Chat Completions server. ``api_key``: require ``Authorization: Bearer <key>``
    (``None``: no check). ``models``: the served model ids; a request for another gets 404 (``None``:
    any model is accepted and ``/v1/models`` lists ``fake-model``). ``reply_text`` fixes the default
    reply's text; ``stream_chunks`` is how many content deltas it is split into; ``delay_s`` is added
    before every answer; ``first_token_s`` plays every successful answer as a slow first token
    (:class:`~tests.fakes.script.SlowFirstToken`); ``context_window`` (tokens) makes longer prompts fail with
    ``context_length_exceeded`` and is reported as ``max_model_len`` by ``/v1/models``;
    ``context_error`` picks how a context-length rejection looks (:data:`CONTEXT_ERRORS`): OpenAI's
    ``code: "context_length_exceeded"``, or vLLM's 400 that says so only in its message;
    ``prefill`` is how a final assistant turn is treated (:data:`~tests.fakes.script.PREFILL_MODES`;
    ``continue`` only with ``continue_final_message``, as vLLM); ``record=False`` keeps no request log
    (for long benchmark runs)."""

    flap_failure: Step = Fault(503)

    def __init__(
        self,
        api_key: str | None = None,
        *,
        models: Sequence[str] | None = None,
        reply_text: str | None = None,
        stream_chunks: int = 8,
        delay_s: float = 0.0,
        first_token_s: float = 0.0,
        context_window: int | None = None,
        context_error: str = "openai",
        prefill: str = "continue",
        record: bool = True,
    ) -> None:
        super().__init__(record=record)
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {PREFILL_MODES}, not {prefill!r}")
        self.prefill = prefill
        if context_error not in CONTEXT_ERRORS:
            raise ValueError(f"context_error must be one of {CONTEXT_ERRORS}, not {context_error!r}")
        self.context_error = context_error
        self.api_key = api_key
        self.models = list(models) if models is not None else None
        self.reply_text = reply_text
        self.stream_chunks = stream_chunks
        self.delay_s = delay_s
        self.first_token_s = first_token_s
        self.context_window = context_window
        self._bearer = f"Bearer {api_key}" if api_key is not None else None
        self._prefix = secrets.token_hex(6)
        self._ids = itertools.count(1)
        created = int(time.time())
        listing = {
            "object": "list",
            "data": [
                {
                    "id": m,
                    "object": "model",
                    "created": created,
                    "owned_by": "tiergate-fake",
                    "root": m,
                    "max_model_len": context_window,
                }
                for m in (self.models or ["fake-model"])
            ],
        }
        self._models_body = _dumps(listing).encode()
        self.app = self._build_app(
            [
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    # -- routes ---------------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def _list_models(self, request: Request) -> Response:
        rejection = self._check_auth(request.headers.get("authorization"))
        return rejection or Response(self._models_body, media_type=_JSON)

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        rec = self._record(request, raw)
        rejection = self._check_auth(rec.headers.get("authorization"))
        body = rec.body
        if rejection is None:
            if not isinstance(body, dict):
                rejection = self._error(400, None, "We could not parse the JSON body of your request.")
            else:
                rejection = self._validate(body)
        if rejection is not None:
            self._count("rejected")
            return rejection
        assert isinstance(body, dict)
        messages = body["messages"]
        try:
            step = self._next_step(
                rec, text_of(next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""))
            )
        except ScriptError as exc:
            self._count("rejected")
            return self._error(400, None, f"fake: {exc}")
        if self.context_window is not None and step is None:
            used = estimate_tokens(prompt_text(body))
            if used > self.context_window:
                step = ContextLength(prompt_tokens=used, limit=self.context_window)
        return await self._play(request, body, step, stream=body.get("stream") is True)

    # -- validation -----------------------------------------------------------------------------

    def _check_auth(self, authorization: str | None) -> Response | None:
        if self._bearer is None or authorization == self._bearer:
            return None
        if not authorization:
            return self._error(
                401,
                "invalid_request_error",
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        return self._error(401, "invalid_request_error", "Incorrect API key provided.", code="invalid_api_key")

    def _validate(self, body: Mapping[str, Any]) -> Response | None:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            return self._error(400, None, "model: Input should be a valid string", param="model")
        if self.models is not None and model is not None and model not in self.models:
            return self._error(
                404,
                "invalid_request_error",
                f"The model `{model}` does not exist.",
                param="model",
                code="model_not_found",
            )
        messages = body.get("messages")
        if not isinstance(messages, list):
            return self._error(400, None, "messages: Field required", param="messages")
        if not messages:
            return self._error(400, None, "[] is too short - 'messages'", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                return self._error(
                    400, None, f"messages[{i}]: role must be one of {sorted(_ROLES)}", param=f"messages.[{i}].role"
                )
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                return self._error(400, None, f"{key} must be at least 1, got {value!r}.", param=key)
        return None

    # -- dialect hooks --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req-{self._prefix}{next(self._ids):x}"}

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
        kind = error_type or ERROR_TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
        body = {
            "error": {
                "message": message or ERROR_MESSAGES.get(status, kind),
                "type": kind,
                "param": param,
                "code": code,
            }
        }
        return Response(
            _dumps(body), status_code=status, media_type=_JSON, headers={**self._headers(), **(headers or {})}
        )

    def _context_length(self, step: ContextLength) -> Response:
        if self.context_error == "vllm":  # vLLM >= 0.9: OpenAI's envelope, the status as the code, no context code
            message = (
                f"This model's maximum context length is {step.limit} tokens. However, you requested "
                f"{step.prompt_tokens} tokens ({step.prompt_tokens} in the messages, 0 in the completion). "
                "Please reduce the length of the messages or completion."
            )
            error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
            body: dict[str, Any] = {"error": error}
            return Response(_dumps(body), status_code=400, media_type=_JSON, headers=self._headers())
        if self.context_error == "vllm-legacy":  # older vLLM: the error object is the whole body
            message = (
                f"The prompt (total length {step.prompt_tokens}) is longer than the maximum model length of "
                f"{step.limit}. Make sure that `max_model_len` is no smaller than the number of text tokens."
            )
            body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
            return Response(_dumps(body), status_code=400, media_type=_JSON, headers=self._headers())
        return self._error(
            400,
            "invalid_request_error",
            f"This model's maximum context length is {step.limit} tokens. However, your messages resulted in "
            f"{step.prompt_tokens} tokens. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )

    def _stream_error_events(self, step: StreamError) -> list[bytes]:
        error = {
            "message": step.message,
            "type": step.error_type,
            "param": None,
            "code": self._stream_error_status(step),
        }
        return [f"data: {_dumps({'error': error})}\n\n".encode(), _DONE]

    def _stream_error_status(self, step: StreamError) -> int:
        return STATUS_OF_TYPE.get(step.error_type, 500)

    def _render(self, body: dict[str, Any], step: Reply | Refusal | None) -> Completion:
        content: str | None
        calls: list[dict[str, Any]] = []
        finish: str | None = None
        if isinstance(step, Refusal):
            content, finish = step.text, "content_filter"
        elif step is not None and (step.text is not None or step.tool_use is not None):
            content = step.text
            calls = [self._call(str(c["name"]), c.get("input") or {}, c.get("id")) for c in step.tool_use or []]
        else:
            content, calls = self._default(body)
        prefix = self._continuing(body) if body.get("continue_final_message") is True else None
        if content and prefix is not None and not isinstance(step, Refusal):
            content = continued(content, prefix)
        if step is not None and not isinstance(step, Refusal) and step.stop_reason:
            finish = _FINISH_FROM_ANTHROPIC.get(step.stop_reason, step.stop_reason)
        matched: str | None = None
        if finish is None:
            if calls:
                finish = "tool_calls"
            else:
                content, finish, matched = self._natural_stop(body, content or "")
        completion_tokens = max(
            1, estimate_tokens(content or "") + sum(estimate_tokens(c["function"]["arguments"]) for c in calls)
        )
        prompt_tokens = estimate_tokens(prompt_text(body))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if step is not None and not isinstance(step, Refusal) and step.usage:
            usage.update(step.usage)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return Completion(
            f"chatcmpl-{self._prefix}{next(self._ids):x}",
            int(time.time()),
            str(body.get("model") or (self.models or ["fake-model"])[0]),
            content,
            calls,
            finish,
            usage,
            self.stream_chunks,
            include_usage,
            matched,
            (body.get("top_logprobs") or 0) if body.get("logprobs") is True else None,
        )

    # -- the default reply ----------------------------------------------------------------------

    def _call(self, name: str, arguments: Any, call_id: Any = None) -> dict[str, Any]:
        return {
            "id": str(call_id or f"call_{self._prefix}{next(self._ids):x}"),
            "type": "function",
            "function": {"name": name, "arguments": _dumps(arguments)},
        }

    def _default(self, body: Mapping[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
        choice = body.get("tool_choice")
        wanted = None
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            wanted = choice["function"].get("name")
        if tools and (choice == "required" or wanted is not None):
            tool = next((t for t in tools if t["function"].get("name") == wanted), tools[0])["function"]
            args = synthesize(tool.get("parameters") or {"type": "object"})
            return None, [self._call(str(tool.get("name", "tool")), args if isinstance(args, dict) else {})]
        last = body["messages"][-1]
        if last.get("role") == "tool":
            return f"Fake LLM got the tool result: {text_of(last.get('content'))[:60]}", []
        if self.reply_text is not None:
            return self.reply_text, []
        user = next((m.get("content") for m in reversed(body["messages"]) if m.get("role") == "user"), "")
        return f"Hello from fake LLM. You said: {text_of(user)[:40]}", []

    def _natural_stop(self, body: Mapping[str, Any], text: str) -> tuple[str, str, str | None]:
        """The text, its finish reason, and the stop sequence that ended it (vLLM reports it as ``stop_reason``)."""
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
        text, matched = apply_stop(text, stops)
        if matched is not None:
            return text, "stop", matched
        budget = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(budget, int) and estimate_tokens(text) > budget:
            return truncate_to_tokens(text, budget), "length", None
        return text, "stop", None
