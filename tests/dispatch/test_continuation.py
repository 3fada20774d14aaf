"""Stream continuation goes only to backends that declare ``continues_prefix`` (no kind names involved)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.pools import pool_of
from tiergate.backends import Capabilities
from tiergate.backends.mock import MockBackend, gather, reply
from tiergate.config import BackendConfig, DispatchConfig
from tiergate.dispatch import Dispatcher
from tiergate.dispatch.pool import Pool
from tiergate.errors import PrefillRejected, SpliceDiverged, UpstreamError, UpstreamUnavailable
from tiergate.types import ChatRequest, ChatResponse, Message, StreamEnd, StreamEvent, TextDelta


async def _breaks(request: ChatRequest) -> AsyncIterator[StreamEvent]:
    yield TextDelta("Hello, ")
    raise UpstreamUnavailable("connection reset", backend="a")


def _backend(config: BackendConfig) -> MockBackend:
    if config.name == "a":
        return MockBackend(config, _breaks)

    def finish(request: ChatRequest) -> ChatResponse:
        return reply(f"world (from {config.name})")

    # ``b`` answers plain requests but cannot resume a prefix; ``c`` can.
    can = Capabilities(continues_prefix=config.name == "c")
    return MockBackend(config, finish, can)


async def test_a_broken_stream_is_continued_only_where_continuation_is_declared() -> None:
    pool = pool_of(_backend, {"name": "a"}, {"name": "b"}, {"name": "c"})
    dispatcher = Dispatcher(pool, DispatchConfig())
    targets = [pool.states[n] for n in ("a", "b", "c")]
    request = ChatRequest("open", [Message.text("user", "hi")], stream=True)
    _, events, served = await dispatcher.stream(request, targets)
    text = "".join(ev.text for ev in await gather(events) if isinstance(ev, TextDelta))
    assert text == "Hello, world (from c)"
    assert served.state.name == "c"
    b, c = pool.states["b"].backend, pool.states["c"].backend
    assert isinstance(b, MockBackend)
    assert isinstance(c, MockBackend)
    assert b.requests == []
    assert c.requests[0].messages[-1].text_content == "Hello,"  # the partial answer (right-stripped), the prefix


FULL = "Hello, world. This is the whole answer."


async def _cut_after_hello(request: ChatRequest) -> AsyncIterator[StreamEvent]:
    yield TextDelta("Hello, ")
    yield TextDelta("world. ")
    raise UpstreamUnavailable("connection reset", backend="a")


def _fallback(answer: str, rejects_prefill: bool, declares: bool) -> Callable[[BackendConfig], MockBackend]:
    def build(config: BackendConfig) -> MockBackend:
        if config.name == "a":
            return MockBackend(config, _cut_after_hello)

        def handle(request: ChatRequest) -> ChatResponse:
            if request.messages[-1].role == "assistant" and rejects_prefill:
                raise PrefillRejected("HTTP 400: does not support assistant message prefill", backend=config.name)
            return reply(answer)  # whatever the prefix: a backend that ignores it starts over

        return MockBackend(config, handle, Capabilities(continues_prefix=declares))

    return build


async def _resume(build: Callable[[BackendConfig], MockBackend]) -> tuple[str, list[StreamEvent], Pool]:
    pool = pool_of(build, {"name": "a"}, {"name": "b"})
    dispatcher = Dispatcher(pool, DispatchConfig())
    request = ChatRequest("open", [Message.text("user", "hi")], stream=True)
    _, events, _ = await dispatcher.stream(request, [pool.states["a"], pool.states["b"]])
    got: list[StreamEvent] = []
    with contextlib.suppress(UpstreamError):
        async for ev in events:
            got.append(ev)
    text = "".join(ev.text for ev in got if isinstance(ev, TextDelta))
    return text, got, pool


async def test_a_refused_prefill_is_learned_and_the_answer_restarted_and_spliced() -> None:
    text, events, pool = await _resume(_fallback(FULL, rejects_prefill=True, declares=True))
    assert text == FULL  # the caller's text: no repeat, no gap, never the 400
    assert isinstance(events[-1], StreamEnd)
    b = pool.states["b"]
    assert b.prefill_rejected  # learned for the life of the process
    assert not b.continues_prefix
    assert b.breaker.state == "closed"
    backend = b.backend
    assert isinstance(backend, MockBackend)
    assert [r.messages[-1].role for r in backend.requests] == ["assistant", "user"]  # continued, then restarted


async def test_a_continuation_that_ignores_the_prefix_is_not_sent_twice() -> None:
    text, events, _ = await _resume(_fallback(FULL, rejects_prefill=False, declares=True))
    assert text == FULL
    assert isinstance(events[-1], StreamEnd)


async def test_a_restarted_answer_that_diverges_ends_with_an_error_naming_the_first_failure() -> None:
    pool = pool_of(
        _fallback("Hi there, a different answer.", rejects_prefill=False, declares=False), {"name": "a"}, {"name": "b"}
    )
    dispatcher = Dispatcher(pool, DispatchConfig())
    request = ChatRequest("open", [Message.text("user", "hi")], stream=True)
    _, events, _ = await dispatcher.stream(request, [pool.states["a"], pool.states["b"]])
    got: list[StreamEvent] = []

    async def drain() -> None:
        async for ev in events:
            got.append(ev)

    with pytest.raises(SpliceDiverged) as caught:
        await drain()
    assert "connection reset" in caught.value.message  # the original failure is named
    assert "'b'" in caught.value.message
    assert not any(isinstance(ev, StreamEnd) for ev in got)
    assert "".join(ev.text for ev in got if isinstance(ev, TextDelta)) == "Hello, world. "  # nothing more
