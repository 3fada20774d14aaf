"""Helpers shared by the dialect edges: body decoding and validation errors that name the field."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tiergate.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)
# Parts of a validation error's location that name a union's branch, not a field: ``str``, ``list[...]``, the
# ``block:text`` tags of Anthropic's content blocks.
_BRANCH = re.compile(r"str|int|float|bool|dict|list|none|[a-z]+\[.*\]|block:\w+")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidRequest(f"request body is not valid JSON{where}") from None


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Of the alternatives of a union (a content string, or a list of blocks), the one that got furthest.
        first = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
        loc = ".".join(str(p) for p in first["loc"] if not _BRANCH.fullmatch(str(p)))
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "required field is missing"
        elif first["type"] == "too_short" and loc.endswith("messages"):
            msg = "must contain at least one message"
        raise InvalidRequest(f"{loc}: {msg}", param=loc or None) from None


def check_max_tokens(value: int | None, limit: int, field: str) -> None:
    if value is not None and value > limit:
        raise InvalidRequest(f"{field}: {value} is larger than this gateway allows ({limit})", param=field)


def check_tool_results(tool_ids_seen: set[str], tool_call_id: str, where: str) -> None:
    if tool_call_id not in tool_ids_seen:
        raise InvalidRequest(
            f"{where}: a tool result must answer a tool call made by the preceding assistant turn "
            f"(no call with id {tool_call_id!r})",
            param=where,
        )


def feature_name(name: str) -> str:
    """A field or block name as the ``x-tiergate-dropped`` header may carry it (a caller's odd key: ``other``).

    >>> feature_name("thinking"), feature_name("bad\\nname")
    ('thinking', 'other')
    """
    return name if _NAME.fullmatch(name) else "other"
