"""The batch file formats: one item a line in, one result a line out, in the item's own dialect.

An input line is a JSON object in any of three shapes:

- tiergate's: ``{"custom_id": "t-1", "body": {...}}``, the body an OpenAI Chat Completions or Anthropic
  Messages request; ``"dialect": "openai" | "anthropic"`` says which, else it is recognised from the body;
- OpenAI's Batch API input: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``
  (``"url": "/v1/messages"`` reads the body as Anthropic's);
- Anthropic's Message Batches request: ``{"custom_id", "params": {...}}``.

``custom_id`` (a string, unique in the file) defaults to ``line-N``. ``stream`` in a body is ignored.

An output line is the item's result in the format its dialect's own batch API writes, plus a ``tiergate``
object (tier, backend, route, cost):

- OpenAI items: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``, the
  body a ``chat.completion`` or an error envelope; an item never processed (expired, canceled) has
  ``response: null`` and ``error: {"code": "batch_expired" | "batch_cancelled", "message"}``;
- Anthropic items: ``{"custom_id", "result": {"type": "succeeded", "message"}}``, or ``errored`` (with
  ``error``, Anthropic's envelope), ``expired`` or ``canceled``.

>>> item = parse_line(b'{"custom_id": "a", "params": {"model": "auto", "max_tokens": 8,'
...                   b' "messages": [{"role": "user", "content": "hi"}]}}', 0, 1)
>>> item.custom_id, item.dialect.value, item.chat.last_user_text()
('a', 'anthropic', 'hi')
>>> parse_line(b'{"body": {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}}',
...            1, 2).dialect.value
'openai'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tiergate.api.intake import decode
from tiergate.config import LimitsConfig
from tiergate.dialects import anthropic, openai
from tiergate.errors import InvalidRequest, TiergateError
from tiergate.types import JSON, ChatRequest, ChatResponse, Dialect

__all__ = ["BatchItem", "Outcome", "detect_dialect", "parse_line", "render_line"]

#: How an item ended: a response, an error envelope, or never processed by its batch.
Outcome = Literal["succeeded", "errored", "expired", "canceled"]
LIMITS = LimitsConfig()
_PARSE = {Dialect.OPENAI: openai.parse_request, Dialect.ANTHROPIC: anthropic.parse_request}
_URLS = {"/v1/chat/completions": Dialect.OPENAI, "/v1/messages": Dialect.ANTHROPIC}
#: Fields and values only one of the two dialects has.
_OPENAI_KEYS = frozenset(
    {
        "max_completion_tokens",
        "response_format",
        "n",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "stream_options",
        "parallel_tool_calls",
        "user",
        "store",
    }
)
_ANTHROPIC_KEYS = frozenset(
    {"system", "stop_sequences", "top_k", "thinking", "service_tier", "container", "mcp_servers"}
)
_OPENAI_ROLES = frozenset({"system", "developer", "tool", "function"})
_OPENAI_PARTS = frozenset({"image_url", "input_audio", "file", "refusal"})
_ANTHROPIC_BLOCKS = frozenset({"tool_use", "tool_result", "image", "document", "thinking", "redacted_thinking"})
#: The largest ``max_tokens`` an item may ask for (the gateway's ``server.max_tokens_limit`` default).
MAX_TOKENS_LIMIT = 131072


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input line: ``index`` counts items from 0 (blank lines are not items), ``line`` is the file's line
    number. ``chat`` is the parsed request, or ``error`` says why the line cannot be one."""

    index: int
    line: int
    custom_id: str
    dialect: Dialect
    chat: ChatRequest | None = None
    error: TiergateError | None = None


def detect_dialect(body: Mapping[str, Any]) -> Dialect | None:
    """The dialect a request body is written in, from what only one of them has; ``None`` when it could be
    either (``{"model", "max_tokens", "messages": [{"role": "user", "content": "..."}]}``).

    >>> detect_dialect({"system": "Be brief.", "messages": []}).value
    'anthropic'
    >>> detect_dialect({"messages": [{"role": "user", "content": "hi"}]}) is None
    True
    """
    votes = {Dialect.OPENAI: bool(_OPENAI_KEYS & body.keys()), Dialect.ANTHROPIC: bool(_ANTHROPIC_KEYS & body.keys())}
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        votes[Dialect.OPENAI] |= message.get("role") in _OPENAI_ROLES or "tool_calls" in message
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            votes[Dialect.OPENAI] |= kind in _OPENAI_PARTS
            votes[Dialect.ANTHROPIC] |= kind in _ANTHROPIC_BLOCKS
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            votes[Dialect.OPENAI] |= tool.get("type") == "function"
            votes[Dialect.ANTHROPIC] |= "input_schema" in tool
    choice = body.get("tool_choice")
    votes[Dialect.OPENAI] |= isinstance(choice, str) or (isinstance(choice, dict) and choice.get("type") == "function")
    found = [d for d, vote in votes.items() if vote]
    return found[0] if len(found) == 1 else None


def parse_line(
    raw: bytes, index: int, line: int, default: Dialect = Dialect.OPENAI, max_tokens_limit: int = MAX_TOKENS_LIMIT
) -> BatchItem:
    """One input line as an item; a line that is not one is an item with its ``error`` (never an exception)."""
    custom_id, dialect = f"line-{line}", default
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return BatchItem(index, line, custom_id, dialect, error=InvalidRequest(f"line {line}: not valid JSON"))
    if not isinstance(data, dict):
        return BatchItem(index, line, custom_id, dialect, error=InvalidRequest(f"line {line}: not a JSON object"))
    given = data.get("custom_id")
    if given is not None and (not isinstance(given, str) or not 0 < len(given) <= 200):
        error = InvalidRequest(f"line {line}: custom_id: a string of 1 to 200 characters", param="custom_id")
        return BatchItem(index, line, custom_id, dialect, error=error)
    custom_id = given or custom_id
    try:
        body, dialect = _body(data, line, default)
        # the same checks as a live body (lone surrogates, non-finite numbers, depth), then the dialect's parse
        chat = _PARSE[dialect](decode(json.dumps(body).encode(), LIMITS), {}, max_tokens_limit)
    except TiergateError as exc:
        return BatchItem(index, line, custom_id, dialect, error=exc)
    chat.stream = False  # a batch answers whole responses
    return BatchItem(index, line, custom_id, dialect, chat=chat)


def _body(data: Mapping[str, Any], line: int, default: Dialect) -> tuple[Any, Dialect]:
    if "params" in data:
        return data["params"], Dialect.ANTHROPIC
    if "body" not in data:
        raise InvalidRequest(f"line {line}: no request: give 'body' (or Anthropic's 'params')", param="body")
    body = data["body"]
    url, dialect = data.get("url"), data.get("dialect")
    if url is not None:
        if url not in _URLS:
            raise InvalidRequest(f"line {line}: url: {url!r} is not batched here; use one of {sorted(_URLS)}")
        return body, _URLS[url]
    if dialect is not None:
        try:
            return body, Dialect(dialect)
        except ValueError:
            raise InvalidRequest(f"line {line}: dialect: {dialect!r}; use 'openai' or 'anthropic'") from None
    found = detect_dialect(body) if isinstance(body, dict) else None
    return body, found or default


def render_line(
    item: BatchItem,
    request_id: str,
    outcome: Outcome,
    *,
    response: ChatResponse | None = None,
    error: TiergateError | None = None,
    tiergate: JSON | None = None,
) -> JSON:
    """The output line of an item, in the format its dialect's batch API writes (see the module docstring)."""
    extra = {"tiergate": tiergate} if tiergate is not None else {}
    if item.dialect is Dialect.ANTHROPIC:
        result: JSON = {"type": outcome}
        if response is not None:
            result["message"] = anthropic.render_response(response, request_id)
        elif error is not None:
            result["error"] = anthropic.render_error(error)
        return {"custom_id": item.custom_id, "result": result, **extra}
    out: JSON = {"id": f"batch_req_{request_id}", "custom_id": item.custom_id, "response": None, "error": None}
    if response is not None:
        body = openai.render_response(response, request_id)
        out["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    elif outcome == "errored" and error is not None:
        body = openai.render_error(error)
        out["response"] = {"status_code": error.status, "request_id": request_id, "body": body}
    else:
        code = "batch_expired" if outcome == "expired" else "batch_cancelled"
        message = "the batch ended before this request was processed" if outcome == "expired" else "canceled"
        out["error"] = {"code": code, "message": message}
    return {**out, **extra}
