"""A non-streaming answer gathered from a stream, so that a silent backend is left as soon as for a stream.

A whole answer has no first token to watch: asked whole, a backend that takes the request and never answers holds
the caller for the whole attempt (``timeout_s``). Where a backend declares it
(:attr:`~tiergate.backends.base.Capabilities.complete_by_stream`), the dispatcher asks a non-streaming request of
it as a stream instead, under the stream's first-token budget and stall timeout, and gathers the events into the
:class:`~tiergate.types.ChatResponse` the whole answer would have been: its text, tool calls (arguments joined),
stop reason, stop sequence, usage, log probabilities, and what the stream's end says of the answer (its id, the
model that answered, OpenAI's ``refusal``).

    >>> from tiergate.types import StopReason, TextDelta, ToolArgsDelta, ToolCallStart, Usage
    >>> events = [TextDelta("Let me "), TextDelta("look."), ToolCallStart(0, "call_1", "find"),
    ...           ToolArgsDelta(0, '{"q"'), ToolArgsDelta(0, ': "x"}')]
    >>> r = assemble(events, StreamEnd(StopReason.TOOL_USE, Usage(12, 7), model="m-1"), "m")
    >>> r.parts, r.model, r.usage.output_tokens
    ([TextPart(text='Let me look.'), ToolCall(id='call_1', name='find', arguments='{"q": "x"}')], 'm-1', 7)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from tiergate.errors import Silent, UpstreamError
from tiergate.tokens import estimate_tokens
from tiergate.types import (
    JSON,
    ChatResponse,
    EventStream,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)


async def next_event(events: EventStream, stall_s: float, deadline: float, backend: str, what: str) -> StreamEvent:
    """The stream's next event, within ``stall_s`` (and the request's ``deadline``): a longer silence is
    :class:`Silent` ("``what`` stalled for ..."), a stream that ends before its final event an upstream error."""
    limit = max(min(stall_s, deadline - time.monotonic()), 0.0)
    try:
        async with asyncio.timeout(limit):
            return await anext(events)
    except TimeoutError:
        raise Silent(f"{what} stalled for {limit:.1f}s", backend=backend) from None
    except StopAsyncIteration:
        raise UpstreamError("stream ended without a final event", backend=backend) from None


async def gather(
    first: StreamEvent, events: EventStream, stall_s: float, deadline: float, backend: str
) -> tuple[list[StreamEvent], StreamEnd]:
    """Read the stream opened with ``first`` to its end: its events and its final event. A silence longer than
    ``stall_s`` (or past ``deadline``) is :class:`Silent`, a stream that ends without a final event an upstream
    error; the stream is closed however it ends."""
    got: list[StreamEvent] = []
    ev = first
    try:
        while not isinstance(ev, StreamEnd):
            got.append(ev)
            ev = await next_event(events, stall_s, deadline, backend, "answer")
        return got, ev
    finally:
        await events.aclose()


def assemble(events: Iterable[StreamEvent], end: StreamEnd, model: str, prompt_tokens: int = 0) -> ChatResponse:
    """The whole answer the ``events`` and ``end`` of a stream make: text deltas joined (a text after a tool call is a
    part of its own), each tool call with its arguments joined (``{}`` when it streamed none, as a whole answer
    says), the log probabilities of every text delta in one ``{"content": [...]}``. ``model`` is the answer's where
    the stream does not name one; where the backend gave no usage, it is estimated as for a whole answer
    (``prompt_tokens``, and four characters a token of what was produced). Other events (a dialect's own framing)
    carry nothing a canonical answer holds.

    >>> from tiergate.types import StopReason
    >>> assemble([], StreamEnd(StopReason.END_TURN, Usage(estimated=True)), "m", prompt_tokens=9).usage
    Usage(input_tokens=9, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, estimated=True)
    """
    parts: list[TextPart | ToolCall] = []
    text: list[str] = []
    calls: dict[int, tuple[int, str, str, list[str]]] = {}  # index -> (place in parts, id, name, arguments)
    logprobs: list[JSON] | None = None

    def close_text() -> None:
        if text:
            parts.append(TextPart("".join(text)))
            text.clear()

    for ev in events:
        if isinstance(ev, TextDelta):
            text.append(ev.text)
            if ev.logprobs is not None:
                logprobs = [*(logprobs or []), *ev.logprobs]
        elif isinstance(ev, ToolCallStart):
            close_text()
            calls[ev.index] = (len(parts), ev.id, ev.name, [])
            parts.append(ToolCall(ev.id, ev.name, ""))
        elif isinstance(ev, ToolArgsDelta) and ev.index in calls:
            calls[ev.index][3].append(ev.partial_json)
    close_text()
    for place, call_id, name, arguments in calls.values():
        parts[place] = ToolCall(call_id, name, "".join(arguments) or "{}")
    usage = end.usage
    if usage.estimated:
        produced = sum(len(p.text) if isinstance(p, TextPart) else len(p.arguments) for p in parts)
        usage = Usage(prompt_tokens, estimate_tokens(produced), estimated=True)
    return ChatResponse(
        id=end.id or "",
        model=end.model or model,
        parts=parts,
        stop_reason=end.stop_reason,
        usage=usage,
        stop_sequence=end.stop_sequence,
        refusal=end.refusal,
        logprobs={"content": logprobs} if logprobs is not None else None,
    )
