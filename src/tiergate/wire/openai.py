"""OpenAI Chat Completions on the wire: what both the inbound dialect and the OpenAI-compatible backend write
and read.

>>> image_source("data:image/png;base64,iVBO")
{'type': 'base64', 'media_type': 'image/png', 'data': 'iVBO'}
>>> image_url(image_source("data:image/png;base64,iVBO"))
'data:image/png;base64,iVBO'
>>> image_url(image_source("https://example.com/cat.png"))
'https://example.com/cat.png'
"""

from __future__ import annotations

from tiergate.types import JSON, StopReason, ToolCall

FINISH_REASON: dict[StopReason, str] = {
    StopReason.END_TURN: "stop",
    StopReason.STOP_SEQUENCE: "stop",
    StopReason.MAX_TOKENS: "length",
    StopReason.TOOL_USE: "tool_calls",
    StopReason.REFUSAL: "content_filter",
}
STOP_REASON: dict[str, StopReason] = {
    "stop": StopReason.END_TURN,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "content_filter": StopReason.REFUSAL,
}


def tool_call_json(call: ToolCall) -> JSON:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def image_source(url: str) -> JSON:
    """An ``image_url`` part's URL as the canonical image source (Anthropic's: base64 for a data URL)."""
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": head, "data": data}
    return {"type": "url", "url": url}


def image_url(source: JSON) -> str:
    """The canonical image source as an ``image_url`` part's URL (a data URL for base64 data)."""
    return str(source.get("url") or f"data:{source.get('media_type')};base64,{source.get('data')}")
