"""A refusal decided by the gateway's hard policy, in the caller's dialect (HTTP 200, like a model's own).

OpenAI: ``message.refusal`` and ``finish_reason: "content_filter"``; Anthropic: a text block and
``stop_reason: "refusal"``. Streams carry the same text, then the same stop reason.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from tiergate.api.edges import Edge
from tiergate.pipeline.gateway import Plan
from tiergate.types import ChatRequest, ChatResponse, StopReason, StreamEnd, TextDelta, Usage

MODEL = "tiergate-policy"


def refusal_response(edge: Edge, chat: ChatRequest, plan: Plan, request_id: str) -> Response:
    assert plan.refusal is not None
    headers = {
        **edge.ids(request_id),
        "x-tiergate-tier": plan.tier.value,
        "x-tiergate-backend": "none",
        "x-tiergate-route": plan.route,
        "x-tiergate-cost-usd": "0.00000000",
    }
    if not chat.stream:
        response = ChatResponse(request_id, MODEL, [], StopReason.REFUSAL, Usage(), refusal=plan.refusal)
        payload = json.dumps(edge.render(response, request_id), separators=(",", ":")).encode()
        return Response(payload, media_type="application/json", headers=headers)
    renderer = edge.renderer(request_id, MODEL, chat, 0)
    text = plan.refusal

    async def body() -> AsyncIterator[bytes]:
        yield renderer.start()
        yield renderer.event(TextDelta(text))
        yield renderer.event(StreamEnd(StopReason.REFUSAL, Usage()))

    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
