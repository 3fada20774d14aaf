"""The canonical internal model: one request, one response, one stream of events.

Every inbound dialect (OpenAI Chat Completions, Anthropic Messages) is parsed into these types at the
edge, and every backend speaks them. Nothing in the core ever sees a dialect's dict.

    >>> req = ChatRequest(model="auto", messages=[Message.text("user", "Hello")], max_tokens=16)
    >>> req.last_user_text()
    'Hello'
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

JSON: TypeAlias = dict[str, Any]
Role: TypeAlias = Literal["user", "assistant", "tool"]


class Tier(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Dialect(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class StopReason(enum.StrEnum):
    """Why generation ended, in Anthropic's vocabulary (the richer of the two)."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_USE = "tool_use"
    REFUSAL = "refusal"


# --- content parts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, passed through untouched to backends that accept images.

    ``source`` is Anthropic's source object (``{"type": "base64", ...}`` or ``{"type": "url", ...}``).
    """

    source: JSON


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant asks for. ``arguments`` is the JSON text of the input object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_call_id: str
    content: str
    is_error: bool = False


Part: TypeAlias = TextPart | ImagePart | ToolCall | ToolResult


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. ``tool`` turns carry only :class:`ToolResult` parts."""

    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def text(cls, role: Role, text: str) -> Message:
        return cls(role=role, parts=(TextPart(text),))

    @property
    def text_content(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(p for p in self.parts if isinstance(p, ToolCall))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: JSON


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` (model decides), ``none``, ``any`` (must call some tool) or ``tool`` (must call ``name``)."""

    kind: Literal["auto", "none", "any", "tool"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: JSON | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Native:
    """The caller's own request body, kept for a backend that speaks the caller's dialect (Anthropic in ->
    Claude), which sends it as it came, with only documented edits: so what the canonical model does not carry
    (thinking, ``cache_control``, documents, server tools, fields of the future) still reaches it.

    ``system`` and ``messages`` are the canonical content the body says: a request whose content was changed
    since (a resumed stream's prefix) no longer :meth:`matches` it, and is sent by translation. Never mutated.
    """

    dialect: Dialect
    body: Mapping[str, Any]
    system: str | None
    messages: tuple[Message, ...]

    def matches(self, request: ChatRequest) -> bool:
        return request.system == self.system and tuple(request.messages) == self.messages


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    include_usage: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Headers the caller sent that Anthropic backends must receive (anthropic-version, anthropic-beta).
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    top_k: int | None = None
    #: ``False``: at most one tool call per answer (OpenAI ``parallel_tool_calls``, Anthropic
    #: ``tool_choice.disable_parallel_tool_use``).
    parallel_tool_calls: bool | None = None
    #: OpenAI ``logprobs``: ``None`` not asked; else how many alternatives per token (``top_logprobs``, 0..20).
    logprobs: int | None = None
    #: The Claude model the caller named (``claude-sonnet-4-5-20250929``): what a backend that serves any Claude
    #: model runs (Anthropic's API); ``None``: each backend its configured model.
    claude_model: str | None = None
    #: The caller's body, for a backend of its dialect (:class:`Native`); ``None`` for the others.
    native: Native | None = None
    #: What the caller sent that the canonical model does not carry (``thinking``, ``cache_control``, ...): a
    #: backend that does not take the native body does without it, and the response says so.
    unmodelled: tuple[str, ...] = ()

    def texts(self) -> list[str]:
        """Every text the request carries: system prompt, all turns, tool calls and tool results."""
        out: list[str] = [self.system] if self.system else []
        for msg in self.messages:
            for part in msg.parts:
                if isinstance(part, TextPart):
                    out.append(part.text)
                elif isinstance(part, ToolResult):
                    out.append(part.content)
                elif isinstance(part, ToolCall):
                    out.append(part.arguments)
        return out

    def last_user_text(self) -> str:
        for msg in reversed(self.messages):
            if msg.role == "user" and msg.text_content:
                return msg.text_content
        return ""

    @property
    def wants_json(self) -> bool:
        fmt = self.response_format
        return fmt is not None and fmt.kind != "text"


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    parts: list[TextPart | ToolCall]
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None
    refusal: str | None = None
    #: OpenAI's ``choices[0].logprobs`` object (``{"content": [...]}``), where asked and the backend gave it.
    logprobs: JSON | None = None
    #: The upstream's own answer in the caller's dialect (Anthropic in -> Claude): rendered as it came.
    native: JSON | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.parts if isinstance(p, ToolCall)]


# --- streaming -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    #: OpenAI's ``logprobs.content`` entries for this text, where asked and the backend gave them.
    logprobs: tuple[JSON, ...] | None = None


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new tool call begins; ``index`` counts tool calls from 0 within the response."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgsDelta:
    index: int
    partial_json: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The stream's last event. ``id``, ``model`` and ``refusal`` are what the upstream said of the whole answer
    where its stream says it (its id, the model that answered, OpenAI's ``refusal``): a non-streaming request
    gathered from a stream (:mod:`tiergate.dispatch.gather`) answers with them, as the whole answer would have."""

    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None
    id: str | None = None
    model: str | None = None
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class NativeEvent:
    """An upstream stream event in the caller's own dialect that the canonical events do not carry (Claude's
    ``message_start``, block starts and stops, thinking and signature deltas, ``message_delta``...), forwarded to
    a caller of that dialect as it came. Text and tool-argument deltas stay canonical events, in order between
    them; a caller of another dialect, and everything but the renderer, skips these."""

    dialect: Dialect
    data: JSON


StreamEvent: TypeAlias = TextDelta | ToolCallStart | ToolArgsDelta | StreamEnd | NativeEvent
EventStream: TypeAlias = AsyncGenerator[StreamEvent, None]
