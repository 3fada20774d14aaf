"""Escalation (a cascade) for structured output: is the open tier's answer usable as asked?

A request that asks for JSON (``response_format`` json_object / json_schema) or for tool calls gets its
open-tier answer checked; an answer that does not parse or does not validate is retried once on the closed
tier (when hard policy allows), and the route says ``escalated:<why>``.

    >>> from tiergate.types import ResponseFormat, StopReason, TextPart, Usage
    >>> req = ChatRequest(model="auto", messages=[], response_format=ResponseFormat("json_object"))
    >>> problem(req, ChatResponse("1", "m", [TextPart("not json")], StopReason.END_TURN, Usage()))
    'invalid-json'
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from referencing.exceptions import Unresolvable

from tiergate.types import ChatRequest, ChatResponse, StopReason


def wants_structure(request: ChatRequest) -> bool:
    forced_tool = request.tool_choice is not None and request.tool_choice.kind in ("any", "tool")
    return request.wants_json or (bool(request.tools) and forced_tool)


def _valid(instance: Any, schema: dict[str, Any] | None) -> bool:
    if not schema:
        return True
    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError:
        return False
    except (jsonschema.SchemaError, Unresolvable, re.error, RecursionError):
        return True  # the caller's schema is broken (a $ref to nowhere, a bad pattern): not the model's fault
    return True


def problem(request: ChatRequest, response: ChatResponse) -> str | None:
    """Why ``response`` fails the structure ``request`` asked for, or None when it is fine."""
    if response.stop_reason is StopReason.REFUSAL:
        return None
    tools = {t.name: t for t in request.tools}
    forced = request.tool_choice is not None and request.tool_choice.kind in ("any", "tool")
    if request.tools and forced and not response.tool_calls:
        return "no-tool-call"
    for call in response.tool_calls:
        spec = tools.get(call.name)
        if spec is None:
            return "unknown-tool"
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            return "invalid-tool-arguments"
        if not isinstance(args, dict) or not _valid(args, spec.input_schema):
            return "invalid-tool-arguments"
    fmt = request.response_format
    if fmt is None or fmt.kind == "text" or response.tool_calls:
        return None
    try:
        value = json.loads(response.text)
    except json.JSONDecodeError:
        return "invalid-json"
    if fmt.kind == "json_object" and not isinstance(value, dict):
        return "invalid-json"
    if fmt.kind == "json_schema" and not _valid(value, fmt.schema):
        return "schema-mismatch"
    return None
