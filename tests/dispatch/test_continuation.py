"""Stream continuation goes only to backends that declare ``continues_prefix`` (no kind names involved)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tests.support.pools import pool_of
from tiergate.backends import Capabilities
from tiergate.backends.mock import MockBackend, gather, reply
from tiergate.config import BackendConfig, DispatchConfig
from tiergate.dispatch import Dispatcher
from tiergate.errors import UpstreamUnavailable
from tiergate.types import ChatRequest, ChatResponse, Message, StreamEvent, TextDelta


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
    assert c.requests[0].messages[-1].text_content == "Hello, "  # the partial answer, resent as the prefix
