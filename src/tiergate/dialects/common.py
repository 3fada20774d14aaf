"""Helpers shared by the dialect edges: validation errors that name the field.

Bodies arrive decoded and checked by :mod:`tiergate.api.intake` (size, depth, lone surrogates, ...)."""

from __future__ import annotations

import binascii
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from tiergate.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; else a 400 naming the field of the body that is wrong.

    Of pydantic's errors, the one deepest in the body is told (a union reports one error per form it tried:
    ``content`` is neither a string nor a list, but its block 3 is what is wrong), by its path in the body.
    """
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(_path_in(data, e["loc"], e["type"] == "missing"), e) for e in exc.errors(include_url=False)]
        depth = max(len(path) for path, _ in errors)
        path, first = next((p, e) for p, e in errors if len(p) == depth)
        loc = ".".join(str(p) for p in path)
        msgs = list(dict.fromkeys(e["msg"] for p, e in errors if p == path))
        msg = "; or: ".join(msgs)
        if first["type"] == "missing":
            msg = "required field is missing"
        elif first["type"] == "too_short" and loc.endswith("messages"):
            msg = "must contain at least one message"
        raise InvalidRequest(f"{loc or 'request body'}: {msg}", param=loc or None) from None


def _path_in(data: Any, loc: tuple[int | str, ...], missing: bool) -> list[int | str]:
    """The part of pydantic's ``loc`` that indexes ``data``: without the labels of union members it tried
    (``str``, ``list[...]``, a block's tag); a missing field's name is kept."""
    path: list[int | str] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        if in_dict or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
            path.append(part)
    if missing and loc and (not path or path[-1] != loc[-1]):
        path.append(loc[-1])
    return path


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


def check_image_source(source: dict[str, Any]) -> dict[str, Any]:
    """An image's ``source`` as Anthropic defines it, checked where it is broken for sure: base64 ``data`` that
    does not decode, no ``media_type``, a ``url`` that is not a string. Other source types pass (Claude's).

    A pydantic validator: the problem is told as the field's error (``messages.0.content.1.source: ...``).
    """
    kind = source.get("type")
    if not isinstance(kind, str):
        raise PydanticCustomError("image_source", "an image source needs a 'type' ('base64' or 'url')")
    if kind == "base64":
        if not isinstance(source.get("media_type"), str) or not source["media_type"]:
            raise PydanticCustomError("image_source", "a base64 image source needs a 'media_type' (image/png, ...)")
        data = source.get("data")
        if not isinstance(data, str) or not data:
            raise PydanticCustomError("image_source", "a base64 image source needs its 'data'")
        try:
            ok = _BASE64.fullmatch(data) is not None and len(binascii.a2b_base64(data)) > 0
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise PydanticCustomError("image_source", "the image's base64 'data' does not decode")
    elif kind == "url" and (not isinstance(source.get("url"), str) or not source["url"]):
        raise PydanticCustomError("image_source", "a url image source needs its 'url'")
    return source


def check_image_url(url: str) -> str:
    """An ``image_url`` part's URL: http(s), or a ``data:`` URL of base64 data that decodes."""
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(";base64,")
        if not sep:
            raise PydanticCustomError("image_url", "a data URL must be base64: data:image/png;base64,...")
        check_image_source({"type": "base64", "media_type": head, "data": data})
    elif not url.startswith(("http://", "https://")):
        raise PydanticCustomError("image_url", "an image URL must be http(s) or a base64 data URL")
    return url


def check_arguments(arguments: str, where: str) -> None:
    """A tool call's ``arguments``: JSON text the gateway decodes for Anthropic backends, so a lone surrogate
    escaped inside it (``{"q": "\\ud800"}`` as text) is refused here like one anywhere else in the body."""
    if "\\u" not in arguments:
        return
    try:
        value = json.loads(arguments)
    except ValueError:
        return  # not JSON: passed on as text
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"{where}: the arguments hold a lone surrogate, which is not Unicode text; send valid UTF-8", param=where
        ) from None
