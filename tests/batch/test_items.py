"""The batch file formats: three input shapes, the dialect recognised from the body, and one output line per
item in the format its dialect's batch API writes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tiergate.batch.items import detect_dialect, parse_line, render_line
from tiergate.errors import InvalidRequest, UpstreamUnavailable
from tiergate.types import ChatResponse, Dialect, StopReason, TextPart, Usage

USER = [{"role": "user", "content": "hi"}]


def line(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_the_three_input_shapes() -> None:
    ours = parse_line(line({"custom_id": "a", "body": {"model": "auto", "messages": USER}}), 0, 1)
    openai = parse_line(
        line(
            {
                "custom_id": "b",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": USER},
            }
        ),
        1,
        2,
    )
    anthropic = parse_line(line({"custom_id": "c", "params": {"model": "m", "max_tokens": 5, "messages": USER}}), 2, 3)
    messages_url = parse_line(
        line({"custom_id": "d", "url": "/v1/messages", "body": {"model": "m", "max_tokens": 5, "messages": USER}}), 3, 4
    )
    assert [(i.custom_id, i.dialect, i.error) for i in (ours, openai, anthropic, messages_url)] == [
        ("a", Dialect.OPENAI, None),
        ("b", Dialect.OPENAI, None),
        ("c", Dialect.ANTHROPIC, None),
        ("d", Dialect.ANTHROPIC, None),
    ]
    assert anthropic.chat is not None
    assert (anthropic.chat.model, anthropic.chat.max_tokens, anthropic.chat.last_user_text()) == ("m", 5, "hi")


@pytest.mark.parametrize(
    ("body", "dialect"),
    [
        ({"messages": [{"role": "system", "content": "x"}, *USER]}, Dialect.OPENAI),
        ({"messages": USER, "max_completion_tokens": 5}, Dialect.OPENAI),
        ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, Dialect.OPENAI),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            Dialect.OPENAI,
        ),
        ({"system": "Be brief.", "messages": USER}, Dialect.ANTHROPIC),
        ({"messages": USER, "stop_sequences": ["."]}, Dialect.ANTHROPIC),
        ({"messages": USER, "tools": [{"name": "f", "input_schema": {"type": "object"}}]}, Dialect.ANTHROPIC),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}, Dialect.ANTHROPIC),
        ({"messages": USER, "max_tokens": 5}, None),  # either
        ({"system": "x", "max_completion_tokens": 5, "messages": USER}, None),  # both: the default decides
    ],
)
def test_the_dialect_is_recognised_from_what_only_one_has(body: dict[str, Any], dialect: Dialect | None) -> None:
    assert detect_dialect(body) is dialect


def test_an_ambiguous_body_takes_the_default_dialect() -> None:
    body = {"body": {"model": "auto", "max_tokens": 5, "messages": USER}}
    assert parse_line(line(body), 0, 1).dialect is Dialect.OPENAI
    assert parse_line(line(body), 0, 1, default=Dialect.ANTHROPIC).dialect is Dialect.ANTHROPIC
    assert parse_line(line({**body, "dialect": "anthropic"}), 0, 1).dialect is Dialect.ANTHROPIC


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "line 7: not valid JSON"),
        (b"[1, 2]", "line 7: not a JSON object"),
        (line({"custom_id": 5, "body": {}}), "line 7: custom_id: a string of 1 to 200 characters"),
        (line({"custom_id": "x"}), "line 7: no request: give 'body' (or Anthropic's 'params')"),
        (line({"url": "/v1/embeddings", "body": {}}), "line 7: url: '/v1/embeddings' is not batched here"),
        (line({"dialect": "gemini", "body": {}}), "line 7: dialect: 'gemini'; use 'openai' or 'anthropic'"),
        (line({"body": {"model": "auto", "messages": []}}), "messages: must contain at least one message"),
        (line({"params": {"model": "auto", "messages": USER}}), "max_tokens: required field is missing"),
    ],
)
def test_a_line_that_is_not_a_request_is_an_item_with_its_error(raw: bytes, message: str) -> None:
    item = parse_line(raw, 6, 7)
    assert item.chat is None
    assert isinstance(item.error, InvalidRequest)
    assert message in item.error.message
    assert (item.index, item.line) == (6, 7)


def test_stream_is_ignored_and_custom_id_defaults_to_the_line() -> None:
    item = parse_line(line({"body": {"model": "auto", "messages": USER, "stream": True}}), 0, 12)
    assert item.custom_id == "line-12"
    assert item.chat is not None
    assert item.chat.stream is False


RESPONSE = ChatResponse("r", "m", [TextPart("hello")], StopReason.END_TURN, Usage(input_tokens=3, output_tokens=1))


def test_output_lines_in_each_dialects_batch_format() -> None:
    oa = parse_line(line({"custom_id": "o", "body": {"model": "auto", "messages": USER}}), 0, 1)
    an = parse_line(line({"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": USER}}), 1, 2)
    ok = render_line(oa, "rid", "succeeded", response=RESPONSE, tiergate={"tier": "open"})
    assert ok["id"] == "batch_req_rid"
    assert ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == "hello"
    assert (ok["error"], ok["tiergate"]) == (None, {"tier": "open"})
    failed = render_line(oa, "rid", "errored", error=UpstreamUnavailable("overloaded", backend="claude"))
    assert failed["response"]["status_code"] == 503
    assert failed["response"]["body"]["error"]["message"] == "backend 'claude': overloaded"
    expired = render_line(oa, "rid", "expired")
    assert (expired["response"], expired["error"]["code"]) == (None, "batch_expired")
    assert render_line(oa, "rid", "canceled")["error"]["code"] == "batch_cancelled"

    assert render_line(an, "rid", "succeeded", response=RESPONSE)["result"]["message"]["content"] == [
        {"type": "text", "text": "hello"}
    ]
    assert render_line(an, "rid", "errored", error=UpstreamUnavailable("overloaded", backend="c"))["result"] == {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "overloaded_error", "message": "backend 'c': overloaded"}},
    }
    assert render_line(an, "rid", "expired") == {"custom_id": "a", "result": {"type": "expired"}}
