"""Request intake: the body read within its size limit and decoded into JSON a dialect can trust.

What reaches a dialect's validation has passed these steps, each one bounding the work of the next:

1. the body's size (``server.max_body_bytes``), while it is read;
2. the JSON itself: ``NaN`` / ``Infinity`` literals and numbers too long to convert are malformed JSON;
3. one walk over the decoded values: a string holding a lone surrogate (``"\\ud800"``, or its raw UTF-8 bytes)
   cannot be encoded to send anywhere, and a number that does not fit a float (``1e400``) cannot be sent as
   JSON: both are a 400 naming the field, before any backend sees them.

Every problem is a :class:`~tiergate.errors.RequestError` whose message names the field (``messages.0.content``)
and never an exception class.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from starlette.requests import Request

from tiergate.api.edges import Edge
from tiergate.config import Config
from tiergate.errors import InvalidRequest, PayloadTooLarge
from tiergate.types import ChatRequest


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over this gateway's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over this gateway's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse(edge: Edge, body: bytes, headers: Mapping[str, str], config: Config) -> ChatRequest:
    """``body`` decoded (:func:`decode`) and parsed by ``edge``'s dialect: CPU work, run off the loop."""
    return edge.parse(decode(body), headers, config.server.max_tokens_limit)


def _no_constant(name: str) -> NoReturn:
    raise InvalidRequest(f"request body is not valid JSON: {name} is not a JSON number")


def decode(body: bytes) -> Any:
    """The JSON value of ``body``, checked as described above (:class:`InvalidRequest` if it is not fit)."""
    if not body.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid JSON: it is not UTF-8 text") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise InvalidRequest("request body is not valid JSON: a number has too many digits") from None
    # Lone surrogates come from \u escapes or from raw UTF-8 surrogate bytes (0xED 0xA0-0xBF), which json
    # decodes with 'surrogatepass'; without either, no string can hold one.
    strings = b"\\u" in body or b"\xed" in body
    _walk(data, [], strings)
    return data


def _walk(value: Any, path: list[str | int], strings: bool) -> None:
    """Check every string (and key) and number under ``value``; ``path`` names where a problem is."""
    if isinstance(value, str):
        if strings:
            _check_text(value, path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{_where(path)}: number out of range", param=_param(path))
    elif isinstance(value, dict):
        for key, item in value.items():
            if strings:
                _check_text(key, path, "a key here ")
            path.append(key)
            _walk(item, path, strings)
            path.pop()
    elif isinstance(value, list):
        for i, item in enumerate(value):
            path.append(i)
            _walk(item, path, strings)
            path.pop()


def _check_text(text: str, path: list[str | int], what: str = "") -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise InvalidRequest(
            f"{_where(path)}: {what}holds a lone surrogate (\\u{ord(bad):04x} at character {exc.start}), "
            "which is not Unicode text; send valid UTF-8 (surrogates only in pairs)",
            param=_param(path),
        ) from None


def _where(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path) or "request body"


def _param(path: list[str | int]) -> str | None:
    return ".".join(str(p) for p in path) or None
