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

The texts of a Messages body, as the gateway reads them (inspection) and rewrites them (redaction, restoring an
answer): one walker, :func:`map_texts`, so that what is inspected and what is redacted cannot drift apart. It
visits the system prompt, every text block, tool calls' ``input`` (as JSON text), tool results, the text of
``document`` blocks (title, context, a text or content source) and ``search_result`` blocks (title, content).
It leaves alone what Claude wrote and signed (``thinking``, ``redacted_thinking``), server tools' blocks, images
and file, URL or PDF sources::

    >>> body = {"system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    ...         "messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
    ...                                                     {"type": "text", "text": "hi"}]}]}
    >>> out = map_texts(body, lambda text, is_json: text.upper())
    >>> out["system"], out["messages"][0]["content"][0]["thinking"], out["messages"][0]["content"][1]["text"]
    ([{'type': 'text', 'text': 'BE BRIEF.', 'cache_control': {'type': 'ephemeral'}}], 't', 'HI')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tiergate.types import JSON, ToolCall

#: ``fn(text, is_json)``: the text to put in place of ``text`` (``is_json``: a tool call's input, as JSON text).
TextMap = Callable[[str, bool], str]
#: Block types whose texts :func:`map_texts` visits; every other type is carried as it is.
READ_BLOCKS = frozenset({"text", "image", "tool_use", "tool_result", "document", "search_result"})
#: Every content block type the Messages API defines (as of 2025-11): another type gets Claude's 400 at the edge
#: (Claude refuses a tag it does not know); a block type Anthropic adds later is added here.
MESSAGES_BLOCKS = READ_BLOCKS | {
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "tool_reference",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
}


def is_claude_model(name: str) -> bool:
    """A Claude model's name (``claude-sonnet-4-5-20250929``, ``claude-haiku-4-5``, any ``claude-*``)?

    >>> is_claude_model("claude-sonnet-4-5-20250929"), is_claude_model("claude"), is_claude_model("gpt-4o")
    (True, False, False)
    """
    return name.lower().startswith("claude-") and len(name) > len("claude-")


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


def map_texts(body: Mapping[str, Any], fn: TextMap) -> JSON:
    """A copy of ``body`` (a request, or a response with ``content``) with every text it carries through ``fn``."""
    out = dict(body)
    if isinstance(body.get("system"), str):
        out["system"] = fn(body["system"], False)
    elif isinstance(body.get("system"), list):
        out["system"] = map_blocks(body["system"], fn)
    if isinstance(body.get("messages"), list):
        out["messages"] = [
            {**m, "content": map_content(m.get("content"), fn)} if isinstance(m, dict) else m for m in body["messages"]
        ]
    if isinstance(body.get("content"), list):
        out["content"] = map_blocks(body["content"], fn)
    return out


def map_content(content: Any, fn: TextMap) -> Any:
    if isinstance(content, str):
        return fn(content, False)
    return map_blocks(content, fn) if isinstance(content, list) else content


def map_blocks(blocks: Sequence[Any], fn: TextMap) -> list[Any]:
    return [_map_block(b, fn) if isinstance(b, dict) else b for b in blocks]


def _map_block(block: JSON, fn: TextMap) -> JSON:
    kind = block.get("type")
    out = dict(block)
    if kind == "text" and isinstance(block.get("text"), str):
        out["text"] = fn(block["text"], False)
    elif kind == "tool_use" and isinstance(block.get("input"), dict):
        text = json.dumps(block["input"])
        mapped = fn(text, True)
        if mapped != text:
            out["input"] = json.loads(mapped)
    elif kind == "tool_result" and "content" in block:
        out["content"] = map_content(block["content"], fn)
    elif kind in ("document", "search_result"):
        for key in ("title", "context"):
            if isinstance(block.get(key), str):
                out[key] = fn(block[key], False)
        if kind == "search_result":
            out["content"] = map_content(block.get("content"), fn)
        elif isinstance(source := block.get("source"), dict):
            if source.get("type") == "text" and isinstance(source.get("data"), str):
                out["source"] = {**source, "data": fn(source["data"], False)}
            elif source.get("type") == "content":
                out["source"] = {**source, "content": map_content(source.get("content"), fn)}
    return out


def texts_of(blocks: Any) -> list[str]:
    """The texts :func:`map_texts` visits in ``blocks`` (a content string or list), in order."""
    found: list[str] = []

    def keep(text: str, is_json: bool) -> str:
        found.append(text)
        return text

    map_content(blocks, keep)
    return found
