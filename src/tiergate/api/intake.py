"""Request intake: the body read within its size limit and decoded into JSON a dialect can trust.

What reaches a dialect's validation has passed these steps, each one bounding the work of the next
(the limits are ``server.max_body_bytes`` and the ``limits:`` section of the configuration):

1. the body's size, while it is read (413);
2. its shape, on the raw bytes, before any parsing: arrays and objects nested deeper than ``max_json_depth``
   (400: ``json.loads`` recurses once a level) and more than ``max_json_items`` members in all (413: every
   member becomes a Python object, built while holding the GIL). A few linear passes at C speed find them:
   escapes removed, then string literals, leaving the brackets and commas to count;
3. the JSON itself: ``NaN`` / ``Infinity`` and numbers too long to convert are malformed JSON (400);
4. one walk over the decoded values: a string longer than ``max_text_chars`` or a ``messages`` list longer
   than ``max_messages`` (413); a string holding a lone surrogate (``"\\ud800"``, or its raw UTF-8 bytes)
   cannot be encoded to send anywhere, and a number that does not fit a float (``1e400``) cannot be sent as
   JSON (400).

Every problem is a :class:`~tiergate.errors.RequestError` whose message names the field (``messages.0.content``)
or the limit, never an exception class.

    >>> limits = LimitsConfig(max_json_depth=3)
    >>> decode(b'{"a": [1, {"b": 2}]}', limits)
    {'a': [1, {'b': 2}]}
    >>> decode(b'{"a": [[[1]]]}', limits)
    Traceback (most recent call last):
    ...
    tiergate.errors.InvalidRequest: request body nests arrays and objects deeper than 3 levels (limits.max_json_depth)
    >>> decode(b'{"a": "[[[[ \\\\" ]]]]"}', limits)  # brackets in strings are text
    {'a': '[[[[ " ]]]]'}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from starlette.requests import Request

from tiergate.config import LimitsConfig
from tiergate.errors import InvalidRequest, PayloadTooLarge
from tiergate.types import ChatRequest

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = frozenset(b"[{")


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


def parse(
    parse_fn: Callable[[Any, Mapping[str, str], int], ChatRequest],
    body: bytes,
    headers: Mapping[str, str],
    limits: LimitsConfig,
    max_tokens_limit: int,
) -> ChatRequest:
    """``body`` decoded (:func:`decode`) and parsed by a dialect's ``parse_fn`` (an :class:`Edge`'s ``parse``):
    CPU work, run where :class:`~tiergate.offload.Parsers` says (a module-level function: it may run in a worker
    process)."""
    return parse_fn(decode(body, limits), headers, max_tokens_limit)


def decode(body: bytes, limits: LimitsConfig) -> Any:
    """The JSON value of ``body``, checked as described above (a :class:`RequestError` if it is not fit)."""
    if not body.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    check_shape(body, limits)
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid JSON: it is not UTF-8 text") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise InvalidRequest("request body is not valid JSON: a number has too many digits") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise PayloadTooLarge(
            f"messages: {len(messages)} messages is over this gateway's limit of {limits.max_messages} "
            "(limits.max_messages)",
            param="messages",
        )
    # Lone surrogates come from \u escapes or from raw UTF-8 surrogate bytes (0xED 0xA0-0xBF), which json
    # decodes with 'surrogatepass'; without either, no string can hold one.
    _Walk(limits.max_text_chars, b"\\u" in body or b"\xed" in body).value(data, [])
    return data


def check_shape(body: bytes, limits: LimitsConfig) -> None:
    """Depth and member count of the JSON in ``body``, read off its bytes (strings skipped) without parsing it.

    Malformed JSON is counted as far as it goes: the parser that follows tells what is wrong with it.
    """
    # Escaped backslashes out first, then escaped quotes: every quote left opens or closes a string.
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    quotes = plain.count(b'"')
    # Strings are keys or members, so a body within the limit has at most 2 x (max_json_items + 1) of them:
    # refused before splitting the body at every quote.
    if quotes > 4 * (limits.max_json_items + 1):
        _too_many(quotes // 4, limits)
    bare = b"".join(plain.split(b'"')[::2])  # what lies outside string literals
    items = bare.count(b",") + bare.count(b"[") + bare.count(b"{")
    if items > limits.max_json_items:
        _too_many(items, limits)
    depth = 0
    for byte in bare.translate(None, _NOT_BRACKETS):  # at most 2 x max_json_items brackets
        if byte in _OPENING:
            depth += 1
            if depth > limits.max_json_depth:
                raise InvalidRequest(
                    f"request body nests arrays and objects deeper than {limits.max_json_depth} levels "
                    "(limits.max_json_depth)"
                )
        else:
            depth -= 1


def _too_many(items: int, limits: LimitsConfig) -> NoReturn:
    raise PayloadTooLarge(
        f"request body holds about {items} JSON values, over this gateway's limit of {limits.max_json_items} "
        "(limits.max_json_items)"
    )


def _no_constant(name: str) -> NoReturn:
    raise InvalidRequest(f"request body is not valid JSON: {name} is not a JSON number")


class _Walk:
    """Every string (key or value) and number under a decoded body; ``path`` names where a problem is."""

    def __init__(self, max_chars: int, surrogates: bool) -> None:
        self.max_chars = max_chars
        self.surrogates = surrogates  # may a string hold a lone surrogate at all?

    def value(self, value: Any, path: list[str | int]) -> None:
        if isinstance(value, str):
            self.text(value, path)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest(f"{_where(path)}: number out of range", param=_param(path))
        elif isinstance(value, dict):
            for key, item in value.items():
                self.text(key, path, "a key here ")
                path.append(key)
                self.value(item, path)
                path.pop()
        elif isinstance(value, list):
            for i, item in enumerate(value):
                path.append(i)
                self.value(item, path)
                path.pop()

    def text(self, text: str, path: list[str | int], what: str = "") -> None:
        if len(text) > self.max_chars:
            raise PayloadTooLarge(
                f"{_where(path)}: {what}{len(text)} characters is over this gateway's limit of {self.max_chars} "
                "(limits.max_text_chars)",
                param=_param(path),
            )
        if not self.surrogates or text.isascii():
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
