"""A backend whose answers come from a function (as httpx's ``MockTransport``): tests of the pipeline and of
dispatch run without a server or an HTTP fake.

The handler takes the :class:`ChatRequest` and returns a :class:`ChatResponse`, or the events of a stream
(a list, or an async iterator for a stream that breaks or stalls midway), sync or async; raising an
:class:`~tiergate.errors.UpstreamError` is a failed exchange. Either kind of answer serves both ``complete``
and ``stream``: a response is streamed as one text delta per text part and its tool calls, a stream is
gathered into a response.

    >>> import asyncio
    >>> from tiergate.config import BackendConfig
    >>> from tiergate.types import Message
    >>> echo = MockBackend(BackendConfig(name="echo", tier="open", kind="mock"), lambda r: reply(r.last_user_text()))
    >>> hi = ChatRequest("auto", [Message.text("user", "hi")])
    >>> asyncio.run(echo.complete(hi)).text
    'hi'
    >>> [type(e).__name__ for e in asyncio.run(gather(echo.stream(hi)))]
    ['TextDelta', 'StreamEnd']

The handler object stays reachable as ``backend.handler`` (a class with ``__call__`` can keep a script or
count calls), the requests received as ``backend.requests``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TypeAlias

from tiergate.backends.base import Capabilities
from tiergate.config import BackendConfig
from tiergate.tokens import estimate_prompt_tokens
from tiergate.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    EventStream,
    StopReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)

Reply: TypeAlias = ChatResponse | Iterable[StreamEvent] | AsyncIterable[StreamEvent]
Handler: TypeAlias = Callable[[ChatRequest], Reply | Awaitable[Reply]]

__all__ = ["EVERYTHING", "Handler", "MockBackend", "Reply", "gather", "reply"]

#: A mock declares every capability unless told otherwise.
EVERYTHING = Capabilities(continues_prefix=True, counts_tokens=True, images=True)


def reply(text: str, usage: Usage | None = None, model: str = "mock") -> ChatResponse:
    """A plain text answer that ends its turn."""
    return ChatResponse("mock-1", model, [TextPart(text)], StopReason.END_TURN, usage or Usage())


async def gather(events: AsyncIterable[StreamEvent]) -> list[StreamEvent]:
    return [ev async for ev in events]


class MockBackend:
    capabilities: Capabilities

    def __init__(
        self,
        config: BackendConfig,
        handler: Handler,
        capabilities: Capabilities = EVERYTHING,
    ) -> None:
        self.config = config
        self.model = config.model or config.name
        self.handler = handler
        self.capabilities = capabilities
        self.requests: list[ChatRequest] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> bool:
        return True

    def status(self) -> JSON:
        return {}

    async def count_tokens(self, request: ChatRequest) -> int:
        return estimate_prompt_tokens(request)

    async def _answer(self, request: ChatRequest) -> Reply:
        self.requests.append(request)
        answer = self.handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    async def complete(self, request: ChatRequest) -> ChatResponse:
        answer = await self._answer(request)
        if isinstance(answer, ChatResponse):
            return answer
        events = answer if isinstance(answer, AsyncIterable) else _aiter(answer)
        return _gathered(await gather(events), self.model)

    async def stream(self, request: ChatRequest) -> EventStream:
        answer = await self._answer(request)
        if isinstance(answer, ChatResponse):
            for ev in _events(answer):
                yield ev
            return
        async for ev in answer if isinstance(answer, AsyncIterable) else _aiter(answer):
            yield ev


async def _aiter(events: Iterable[StreamEvent]) -> EventStream:
    for ev in events:
        yield ev


def _events(response: ChatResponse) -> list[StreamEvent]:
    out: list[StreamEvent] = [TextDelta(p.text) for p in response.parts if isinstance(p, TextPart)]
    for i, call in enumerate(response.tool_calls):
        out += [ToolCallStart(i, call.id, call.name), ToolArgsDelta(i, call.arguments)]
    return [*out, StreamEnd(response.stop_reason, response.usage, response.stop_sequence)]


def _gathered(events: list[StreamEvent], model: str) -> ChatResponse:
    text = "".join(ev.text for ev in events if isinstance(ev, TextDelta))
    calls = {ev.index: [ev.id, ev.name, ""] for ev in events if isinstance(ev, ToolCallStart)}
    for ev in events:
        if isinstance(ev, ToolArgsDelta):
            calls[ev.index][2] += ev.partial_json
    end = next((ev for ev in events if isinstance(ev, StreamEnd)), StreamEnd(StopReason.END_TURN, Usage()))
    parts: list[TextPart | ToolCall] = [TextPart(text)] if text else []
    parts += [ToolCall(*calls[i]) for i in sorted(calls)]
    return ChatResponse("mock-1", model, parts, end.stop_reason, end.usage, end.stop_sequence)
