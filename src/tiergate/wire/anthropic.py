"""Anthropic Messages on the wire: what both the inbound dialect and the Claude backends write.

A tool call's arguments are JSON text in the canonical model and an object (``input``) in a ``tool_use`` block.
Arguments that are not a JSON object (a model's broken output, a caller's malformed history) are kept, never
dropped: they travel as ``{"_raw": TEXT}``, so the reader sees what was there.

>>> tool_use_block(ToolCall("t1", "f", '{"x": 1}'))["input"]
{'x': 1}
>>> tool_use_block(ToolCall("t1", "f", ""))["input"]
{}
>>> tool_use_block(ToolCall("t1", "f", '{"x": '))["input"], tool_use_block(ToolCall("t1", "f", "[1]"))["input"]
({'_raw': '{"x": '}, {'_raw': '[1]'})
"""

from __future__ import annotations

import json

from tiergate.types import JSON, ToolCall


def tool_use_block(call: ToolCall) -> JSON:
    try:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        args = None
    return {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": args if isinstance(args, dict) else {"_raw": call.arguments},
    }
