"""A stream after its first event: supervised (stall timeout, deadline) and resumed elsewhere if it breaks.

A stream that breaks after text reached the caller is resumed (see :mod:`tiergate.dispatch.splice`):

1. **continued** on a backend that continues a prefix (:attr:`BackendState.continues_prefix`): the text sent so
   far becomes the final assistant turn. A backend that refuses it (a prefill 400) is marked non-continuing for
   the process and stays a candidate for step 2; the refusal is never what the caller sees.
2. otherwise **restarted** without the prefix on the backends left, and spliced: the new answer is withheld until
   it covers the text sent, then only the rest is streamed.

Either way the resumed answer is checked against what the caller has; one that diverges ends the stream with an
explicit error naming the original failure (:class:`~tiergate.errors.SpliceDiverged`), never as a success.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from tiergate.dispatch.gather import next_event
from tiergate.dispatch.splice import Diverged, Splicer
from tiergate.errors import SpliceDiverged, UpstreamError
from tiergate.types import (
    ChatRequest,
    EventStream,
    Message,
    NativeEvent,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCallStart,
)

if TYPE_CHECKING:
    from tiergate.dispatch.dispatcher import Dispatcher, Outbound, Served
    from tiergate.dispatch.pool import BackendState, Lease

log = logging.getLogger("tiergate.dispatch")


async def supervise(
    d: Dispatcher,
    request: ChatRequest,
    targets: list[BackendState],
    served: Served,
    first: StreamEvent,
    events: EventStream,
    lease: Lease,
    deadline: float,
    outbound: Outbound | None,
) -> EventStream:
    """The whole stream (``first`` included), under stall and total timeouts, resumed elsewhere if it breaks.

    The lease is closed and the breaker told the verdict however the stream ends; success is recorded
    *before* the final event is handed on, because a consumer may stop reading right there.
    """
    text: list[str] = [first.text] if isinstance(first, TextDelta) else []
    tools_started = isinstance(first, ToolCallStart | ToolArgsDelta)
    produced = 1 if isinstance(first, TextDelta | ToolArgsDelta) else 0
    state = lease.state
    tried = served.tried
    try:
        if isinstance(first, StreamEnd):
            lease.success()
            if tried is not None:
                tried.close("ok")
            yield first
            return
        yield first
        while True:
            ev = await next_event(events, state.config.stall_timeout_s, deadline, state.name, "stream")
            if isinstance(ev, StreamEnd):
                lease.success()
                if tried is not None:
                    tried.output_tokens = ev.usage.output_tokens or produced
                    tried.close("ok")
                yield ev
                break
            yield ev
            produced += 1
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, ToolCallStart | ToolArgsDelta):
                tools_started = True
    except UpstreamError as exc:
        lease.failure(exc.message, d.policy.rest(exc.retry_after))
        served.attempts.failed.append(state.name)
        served.attempts.last = exc
        if tried is not None:
            tried.output_tokens = produced
            tried.upstream_status = exc.upstream_status
            tried.close("cut", exc.message)
        if tools_started or not text:
            raise
        log.warning("stream from %s broke after %d events; resuming elsewhere: %s", state.name, produced, exc)
        async for ev in resume(d, request, targets, served, "".join(text), produced, outbound, deadline):
            yield ev
    finally:  # a consumer gone mid-stream leaves no verdict: closing the lease frees the probe
        if tried is not None and tried.ended is None:
            tried.output_tokens = produced
            tried.close("cancelled", "the caller went away")
        try:
            await events.aclose()
        finally:
            lease.close()


async def resume(
    d: Dispatcher,
    request: ChatRequest,
    targets: list[BackendState],
    served: Served,
    sent: str,
    produced: int,
    outbound: Outbound | None,
    deadline: float,
) -> EventStream:
    """The rest of an answer of which the caller has ``sent``: continued or restarted elsewhere, and spliced."""
    failed = served.attempts.last
    assert failed is not None
    opened = await _reopen(d, request, targets, served, sent, outbound, deadline)
    if opened is None:
        served.attempts.last = failed
        raise failed
    events, restarted = opened
    resumed = served.tried
    splicer = Splicer(sent, restarted=restarted)
    try:
        async for ev in events:  # the resumed stream, its first event included
            if isinstance(ev, NativeEvent):
                continue  # a restarted Claude's own framing: the caller has the first one's
            if isinstance(ev, TextDelta):
                rest = splicer.feed(ev.text)
                if rest:
                    yield TextDelta(rest)
                continue
            rest = splicer.finish()
            if rest:
                yield TextDelta(rest)
            if isinstance(ev, StreamEnd):
                usage = ev.usage
                ev = StreamEnd(
                    ev.stop_reason, replace(usage, output_tokens=usage.output_tokens + produced), ev.stop_sequence
                )
            yield ev
    except Diverged as exc:
        log.warning("stream resumed on %s cannot be spliced: %s", served.state.name, exc)
        if resumed is not None:
            resumed.close("diverged", str(exc))
        raise SpliceDiverged(failed, served.state.name, str(exc)) from None
    finally:
        await events.aclose()


async def _reopen(
    d: Dispatcher,
    request: ChatRequest,
    targets: list[BackendState],
    served: Served,
    sent: str,
    outbound: Outbound | None,
    deadline: float,
) -> tuple[EventStream, bool] | None:
    """Open the resumed stream: ``(events, restarted)``; ``None`` when no backend could."""
    attempts = served.attempts
    continuing = [s for s in targets if s.name not in attempts.failed and s.continues_prefix]
    if continuing:
        continued = replace(request, messages=with_prefix(request.messages, sent.rstrip()))
        try:
            _, events, again = await d.stream(continued, continuing, outbound, deadline, attempts, purpose="continue")
        except UpstreamError:
            pass  # none could continue (down, or a prefill refused and now learned): restart on the others
        else:
            served.state, served.tried = again.state, again.tried
            return events, False
    others = [s for s in targets if s.name not in attempts.failed]
    if not others:
        return None
    log.info("restarting the answer without its prefix on %s", ", ".join(s.name for s in others))
    try:
        _, events, again = await d.stream(request, others, outbound, deadline, attempts, purpose="restart")
    except UpstreamError:
        return None
    served.state, served.tried = again.state, again.tried
    return events, True


def with_prefix(messages: list[Message], prefix: str) -> list[Message]:
    """The conversation with ``prefix`` as the assistant's answer so far, to be continued.

    A final assistant turn already there (the caller's prefill, or an earlier continuation) is extended,
    so the conversation never holds two assistant turns in a row.
    """
    if messages and messages[-1].role == "assistant" and not messages[-1].tool_calls:
        return [*messages[:-1], Message("assistant", (TextPart(messages[-1].text_content + prefix),))]
    return [*messages, Message("assistant", (TextPart(prefix),))]
