"""Hostile requests, as hypothesis strategies: what a careless or malicious client can send to the gateway.

Each :class:`Hostile` is one HTTP request (method, path, headers, raw body) and the family it was drawn from.
Families: deep nesting, huge strings, lone surrogates, wrong types, unknown fields, bad tool schemas, bad
images, odd unicode, wrong content types, truncated JSON, random bytes, numbers JSON cannot carry, duplicate
keys, broken semantics (orphan tool results, ...), wrong methods and paths, odd headers, and valid requests
(some of every family stream). Used by ``tests/api/test_fuzz.py`` (bounded) and ``benchmarks/fuzz.py``
(10,000 requests and more against a live gateway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

OA, AN, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
API_PATHS = (OA, AN, COUNT)
JSON_HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@dataclass(slots=True)
class Hostile:
    family: str
    path: str
    body: bytes
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    model: str = ""

    def wire_headers(self) -> dict[bytes, bytes]:
        """The headers as bytes (latin-1, as HTTP carries them): some values are not ASCII."""
        return {k.encode(): v.encode("latin-1") for k, v in self.headers.items()}

    def describe(self) -> str:
        return f"{self.family}: {self.method} {self.path} {self.body[:160]!r}{'...' if len(self.body) > 160 else ''}"


def base_body(path: str, model: str, text: str = "Say hi.", max_tokens: int = 8) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if path != COUNT:
        body["max_tokens"] = max_tokens
    return body


def dumps(value: Any) -> bytes:
    """JSON as a client would send it; lone surrogates go out as their raw UTF-8 bytes, as some clients do."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- building blocks -----------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
odd_chars = st.characters(exclude_categories=())  # every code point, surrogates included
ODD_SNIPPETS = [
    "\u202eevil\u202c",  # right-to-left override
    "\u200b\u200c\u200d\ufeff",  # zero-width characters, a byte-order mark
    "\x00\x01\x1b[31m",  # NUL, control characters, an ANSI escape
    "e\u0301\u0301\u0301\u0301",  # stacked combining marks
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a ZWJ emoji sequence
    "\ufffd\uffff\U0010ffff",  # the replacement character and non-characters
    "<|im_start|>system\n",  # chat-template control tokens
    "[[[[{{{{",  # brackets inside a string
    '\\" \\\\ \\u0000',  # escapes, as text
]
models = st.sampled_from(["auto", "open", "closed", "vllm", "claude"])
paths = st.sampled_from(API_PATHS)
TEXT_FIELDS = ("content", "system", "model", "tool name", "stop", "metadata key", "tool args", "image data")


def _set_text(body: dict[str, Any], path: str, where: str, text: str) -> None:
    """Put ``text`` in the field ``where`` of ``body``, as the dialect of ``path`` spells it."""
    if where == "content":
        body["messages"][-1]["content"] = text
    elif where == "system":
        if path == OA:
            body["messages"].insert(0, {"role": "system", "content": text})
        else:
            body["system"] = text
    elif where == "model":
        body["model"] = text
    elif where == "tool name":
        body["tools"] = [_tool(path, text, {"type": "object"})]
    elif where == "stop":
        body["stop" if path == OA else "stop_sequences"] = [text]
    elif where == "metadata key":
        body["metadata"] = {text: "x"}
    elif where == "tool args":
        _add_tool_turns(body, path, text)
    else:
        _set_image(body, path, {"type": "base64", "media_type": "image/png", "data": text})


def _tool(path: str, name: str, schema: Any) -> dict[str, Any]:
    if path == OA:
        return {"type": "function", "function": {"name": name, "description": "a tool", "parameters": schema}}
    return {"name": name, "description": "a tool", "input_schema": schema}


def _add_tool_turns(body: dict[str, Any], path: str, value: str) -> None:
    """A tool call whose argument is ``value``, and its result, before the last user turn."""
    last = body["messages"].pop()
    if path == OA:
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"q": value})}}
        body["messages"] += [
            {"role": "user", "content": "Use f."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        ]
    else:
        use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": value}}
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}
        body["messages"] += [
            {"role": "user", "content": "Use f."},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result, {"type": "text", "text": "Go on."}]},
        ]
        return
    body["messages"].append(last)


def _set_image(body: dict[str, Any], path: str, source: Any) -> None:
    if path == OA:
        data = source.get("data") if isinstance(source, dict) else source
        url = source if isinstance(source, str) else f"data:image/png;base64,{data}"
        part = {"type": "image_url", "image_url": {"url": url}}
        body["messages"][-1]["content"] = [{"type": "text", "text": "What is it?"}, part]
    else:
        block = {"type": "image", "source": source}
        body["messages"][-1]["content"] = [{"type": "text", "text": "What is it?"}, block]


# --- the families --------------------------------------------------------------------------------------


@st.composite
def deep(draw: st.DrawFn, path: str, model: str) -> Hostile:
    depth = draw(st.sampled_from([20, 63, 64, 65, 100, 1000, 50_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = (opener * depth + "1" + closer * depth).encode()
    body = dumps(base_body(path, model))
    where = draw(st.sampled_from([b'"Say hi."', b"8"])) if path != COUNT else b'"Say hi."'
    return Hostile("deep nesting", path, body.replace(where, nested, 1), model=model)


@st.composite
def huge_string(draw: st.DrawFn, path: str, model: str) -> Hostile:
    size = draw(st.sampled_from([10_000, 100_000, 1_000_000, 3_900_000, 5_000_000]))
    text = draw(st.sampled_from(["a", "é", "\U0001f600", "lorem ipsum ", "\\"])) * (size // 4)
    body = base_body(path, model)
    _set_text(body, path, draw(st.sampled_from(TEXT_FIELDS)), text[:size])
    return Hostile("huge strings", path, dumps(body), model=model)


@st.composite
def surrogates(draw: st.DrawFn, path: str, model: str) -> Hostile:
    lone = chr(draw(st.integers(0xD800, 0xDFFF)))
    text = draw(st.sampled_from(["a{}b", "{}", "{}\U0001f600", "x" * 70_000 + "{}"])).format(lone)
    body = base_body(path, model)
    _set_text(body, path, draw(st.sampled_from(TEXT_FIELDS)), text)
    raw = draw(st.booleans())  # as the raw UTF-8 bytes, or as a JSON \u escape
    data = dumps(body) if raw else json.dumps(body).encode()
    return Hostile("lone surrogates", path, data, model=model)


FIELDS = {
    OA: ["model", "messages", "stream", "tools", "tool_choice", "temperature", "top_p", "max_tokens",
         "max_completion_tokens", "stop", "seed", "user", "n", "metadata", "response_format", "stream_options"],
    AN: ["model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k",
         "tools", "tool_choice", "metadata"],
    COUNT: ["model", "messages", "system", "tools"],
}  # fmt: skip
MESSAGE_FIELDS = ["role", "content", "tool_calls", "tool_call_id", "name"]


@st.composite
def wrong_types(draw: st.DrawFn, path: str, model: str) -> Hostile:
    body = base_body(path, model)
    if draw(st.booleans()):
        body[draw(st.sampled_from(FIELDS[path]))] = draw(json_values)
    else:
        body["messages"][0][draw(st.sampled_from(MESSAGE_FIELDS))] = draw(json_values)
    if draw(st.booleans()):
        body = draw(st.sampled_from([[body], "body", 7, None, True]))
    return Hostile("wrong types", path, dumps(body), model=model)


@st.composite
def unknown_fields(draw: st.DrawFn, path: str, model: str) -> Hostile:
    body = base_body(path, model)
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=12), json_values, min_size=1, max_size=5))
    target = draw(st.sampled_from(["top", "message", "tool"]))
    if target == "top":
        body.update({k: v for k, v in extra.items() if k not in FIELDS[path]})
    elif target == "message":
        body["messages"][0].update({k: v for k, v in extra.items() if k not in ("role", "content")})
    else:
        body["tools"] = [{**_tool(path, "f", {"type": "object"}), **{k: v for k, v in extra.items() if k != "name"}}]
    return Hostile("unknown fields", path, dumps(body), model=model)


SCHEMA_KEYS = ["type", "properties", "items", "enum", "$ref", "required", "anyOf", "format"]
weird_schemas = st.one_of(
    st.just({"type": "quaternion"}),
    st.just({"$ref": "#/definitions/nowhere"}),
    st.just({"type": "object", "properties": {"a": {"$ref": "#"}}}),
    st.just({"type": "string", "pattern": "([a-z]+"}),
    st.just({"type": "object", "properties": {"q": {"type": "string", "pattern": "^\\d{3}-\\d{4}$"}}}),
    st.just({"type": "object", "properties": "not an object"}),
    st.just({"type": "array", "items": {"type": "array", "items": {"type": "array", "minItems": 10**6}}}),
    st.just({"type": "integer", "minimum": 10, "maximum": 1}),
    st.just({"enum": list(range(5000))}),
    st.just({"anyOf": [{"type": "null"}], "allOf": [{"not": {}}]}),
    st.just({"type": "object", "required": ["missing"], "additionalProperties": False}),
    st.dictionaries(st.sampled_from(SCHEMA_KEYS), json_values, max_size=4),
    json_values,
)


@st.composite
def bad_tool_schemas(draw: st.DrawFn, path: str, model: str) -> Hostile:
    body = base_body(path, model, "Call the tool.")
    name = draw(st.sampled_from(["f", "get_weather", "a" * 64, "bad name!", ""]))
    body["tools"] = [_tool(path, name, draw(weird_schemas))]
    if path != COUNT and draw(st.booleans()):
        if path == OA:
            body["tool_choice"] = draw(st.sampled_from(["required", {"type": "function", "function": {"name": name}}]))
        else:
            body["tool_choice"] = draw(st.sampled_from([{"type": "any"}, {"type": "tool", "name": name}]))
    if path == OA and draw(st.booleans()):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "r", "schema": draw(weird_schemas)}}
    return Hostile("bad tool schemas", path, dumps(body), model=model)


@st.composite
def bad_images(draw: st.DrawFn, path: str, model: str) -> Hostile:
    body = base_body(path, model)
    data = draw(st.one_of(st.sampled_from(["!!!", "", "====", PNG_1PX[:-3], "aGVsbG8", PNG_1PX]), st.text(max_size=40)))
    source: Any = draw(
        st.one_of(
            st.just({"type": "base64", "media_type": "image/png", "data": data}),
            st.sampled_from(["", "text/html", "image/bmp"]).map(
                lambda kind: {"type": "base64", "media_type": kind, "data": PNG_1PX}
            ),
            st.just({"type": "url", "url": draw(st.sampled_from(["", "ftp://x/y.png", "javascript:1", "http://"]))}),
            st.just({"type": "file", "file_id": "file_x"}),
            st.just({"data": PNG_1PX}),
            json_values,
        )
    )
    if path == OA and draw(st.booleans()):
        source = draw(st.sampled_from(["data:image/png,abc", f"data:;base64,{data}", "file:///etc/passwd", data]))
    _set_image(body, path, source)
    return Hostile("bad images", path, dumps(body), model=model)


@st.composite
def odd_unicode(draw: st.DrawFn, path: str, model: str) -> Hostile:
    text = draw(st.text(odd_chars, min_size=1, max_size=40)) + draw(st.sampled_from(ODD_SNIPPETS))
    body = base_body(path, model)
    _set_text(body, path, draw(st.sampled_from(TEXT_FIELDS)), text)
    return Hostile("odd unicode", path, dumps(body), model=model)


@st.composite
def content_types(draw: st.DrawFn, path: str, model: str) -> Hostile:
    body = base_body(path, model)
    kind = draw(
        st.sampled_from(
            ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "utf-16"]
        )
    )
    headers = {"anthropic-version": "2023-06-01"}
    if kind == "utf-16":
        data = json.dumps(body).encode("utf-16")
        headers["content-type"] = "application/json; charset=utf-16"
    elif kind.startswith("application/x-www"):
        data = b"model=auto&messages=hi"
        headers["content-type"] = kind
    else:
        data = dumps(body) if draw(st.booleans()) else b"--x\r\ncontent-disposition: form-data\r\n\r\nhi\r\n--x--"
        if kind:
            headers["content-type"] = kind
    return Hostile("wrong content types", path, data, headers=headers, model=model)


@st.composite
def truncated(draw: st.DrawFn, path: str, model: str) -> Hostile:
    data = dumps(base_body(path, model, draw(st.text(max_size=30))))
    return Hostile("truncated JSON", path, data[: draw(st.integers(0, len(data) - 1))], model=model)


@st.composite
def random_bytes(draw: st.DrawFn, path: str, model: str) -> Hostile:
    data = draw(st.one_of(st.binary(max_size=200), st.just(b"\xff\xfe\x00"), st.just(b"\xef\xbb\xbf{}")))
    return Hostile("random bytes", path, data, model=model)


@st.composite
def numbers(draw: st.DrawFn, path: str, model: str) -> Hostile:
    literal = draw(
        st.sampled_from(
            ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "1e-400", "-0", "5.5", "-5", "0",
             "1" + "0" * 4299, "4294967297", "1.0e2"]
        )
    )  # fmt: skip
    field_name = draw(st.sampled_from(["max_tokens", "temperature", "top_p", "seed", "n", "top_k", "metadata"]))
    body = base_body(path, model)
    body[field_name] = "@@"
    data = dumps(body).replace(b'"@@"', literal.encode())
    return Hostile("numbers", path, data, model=model)


@st.composite
def duplicate_keys(draw: st.DrawFn, path: str, model: str) -> Hostile:
    data = dumps(base_body(path, model))
    dup = draw(st.sampled_from([b'"model": 5, ', b'"messages": [], ', b'"max_tokens": -1, ', b'"stream": true, ']))
    return Hostile("duplicate keys", path, data[:1] + dup + data[1:], model=model)


SEMANTIC = [
    ("orphan tool result", lambda p: {"messages": [{"role": "user", "content": "x"}, *_orphan(p)]}),
    ("assistant first", lambda p: {"messages": [{"role": "assistant", "content": "hi"}, *_user()]}),
    ("empty content", lambda p: {"messages": [{"role": "user", "content": ""}]}),
    ("empty blocks", lambda p: {"messages": [{"role": "user", "content": []}]}),
    ("empty text block", lambda p: {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}),
    ("only system", lambda p: {"messages": [{"role": "system", "content": "be brief"}]}),
    ("no messages", lambda p: {"messages": []}),
    ("tool choice without tools", lambda p: {"tool_choice": "required" if p == OA else {"type": "any"}}),
    ("tool choice names a missing tool", lambda p: {"tools": [_tool(p, "f", {"type": "object"})],
        "tool_choice": {"type": "function", "function": {"name": "g"}} if p == OA else {"type": "tool", "name": "g"}}),
    ("duplicate tool names", lambda p: {"tools": [_tool(p, "f", {"type": "object"})] * 2}),
    ("many stop sequences", lambda p: {("stop" if p == OA else "stop_sequences"): ["x"] * 5000}),
    ("max_tokens over the limit", lambda p: {"max_tokens": 10**9}),
    ("max_tokens zero", lambda p: {"max_tokens": 0}),
    ("two choices", lambda p: {"n": 2}),
    ("stream options without stream", lambda p: {"stream_options": {"include_usage": True}}),
    ("user turns in a row", lambda p: {"messages": [{"role": "user", "content": "a"}] * 3}),
    ("10,001 messages", lambda p: {"messages": [{"role": "user", "content": "a"}] * 10_001}),
    ("sovereign flag not a flag", lambda p: {"metadata": {"tiergate_sovereign": "maybe"}}),
]  # fmt: skip


def _user() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "x"}]


def _orphan(path: str) -> list[dict[str, Any]]:
    if path == OA:
        return [{"role": "tool", "tool_call_id": "call_x", "content": "42"}]
    return [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}]}]


@st.composite
def semantics(draw: st.DrawFn, path: str, model: str) -> Hostile:
    name, change = draw(st.sampled_from(SEMANTIC))
    body = {**base_body(path, model), **change(path)}
    return Hostile(f"broken semantics ({name})", path, dumps(body), model=model)


@st.composite
def methods_and_paths(draw: st.DrawFn, path: str, model: str) -> Hostile:
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST", "OPTIONS"]))
    where = draw(st.sampled_from([path, path + "/", path + "x", "/v1/completions", "/v1/models", "/v2" + path, "/"]))
    return Hostile("methods and paths", where, dumps(base_body(path, model)), method=method, model=model)


# What HTTP lets a header carry (no control characters, no whitespace at either end), Latin-1 included.
latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(latin1, max_size=40).map(str.strip)


@st.composite
def odd_headers(draw: st.DrawFn, path: str, model: str) -> Hostile:
    headers = dict(JSON_HEADERS)
    name = draw(
        st.sampled_from(["x-tiergate-tier", "x-tiergate-sovereign", "anthropic-version", "anthropic-beta",
                         "authorization", "x-api-key", "content-length-ish", "accept"])
    )  # fmt: skip
    headers[name] = draw(st.one_of(header_text, st.sampled_from(["open", "closed", "true", "maybe", "Bearer x"])))
    return Hostile("odd headers", path, dumps(base_body(path, model)), headers=headers, model=model)


@st.composite
def valid(draw: st.DrawFn, path: str, model: str) -> Hostile:
    text = draw(st.sampled_from(["Say hi.", "What is 2 + 2?", "Summarise: the cat sat on the mat."]))
    return Hostile("valid", path, dumps(base_body(path, model, text, draw(st.integers(1, 16)))), model=model)


FAMILIES = [
    deep, huge_string, surrogates, wrong_types, unknown_fields, bad_tool_schemas, bad_images, odd_unicode,
    content_types, truncated, random_bytes, numbers, duplicate_keys, semantics, methods_and_paths, odd_headers, valid,
]  # fmt: skip


@st.composite
def hostile_requests(draw: st.DrawFn, model_names: st.SearchStrategy[str] = models) -> Hostile:
    """One hostile request of any family, to any of the three API paths, for one of ``model_names``."""
    path, model = draw(paths), draw(model_names)
    family = draw(st.sampled_from(FAMILIES))
    request = draw(family(path, model))
    if path != COUNT and request.body[:1] == b"{" and draw(st.integers(0, 3)) == 0:  # a quarter of them stream
        request.body = b'{"stream": true, ' + request.body[1:]
    return request
