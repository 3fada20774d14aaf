"""Escalation for structured output: the check itself, and the cascade through a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tiergate.config import parse_config
from tiergate.routing.escalation import problem, wants_structure
from tiergate.types import (
    ChatRequest,
    ChatResponse,
    Message,
    ResponseFormat,
    StopReason,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TOOL = ToolSpec("count", "count things", SCHEMA)


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(model="auto", messages=[Message.text("user", "x")], **kw)


def answer(*parts: TextPart | ToolCall) -> ChatResponse:
    return ChatResponse("1", "m", list(parts), StopReason.END_TURN, Usage())


@pytest.mark.parametrize(
    ("request_kw", "response", "expected"),
    [
        ({"response_format": ResponseFormat("json_object")}, answer(TextPart('{"a": 1}')), None),
        ({"response_format": ResponseFormat("json_object")}, answer(TextPart("sure! {")), "invalid-json"),
        ({"response_format": ResponseFormat("json_object")}, answer(TextPart("[1, 2]")), "invalid-json"),
        ({"response_format": ResponseFormat("json_schema", SCHEMA)}, answer(TextPart('{"n": 3}')), None),
        ({"response_format": ResponseFormat("json_schema", SCHEMA)}, answer(TextPart('{"n": "3"}')), "schema-mismatch"),
        ({"tools": (TOOL,), "tool_choice": ToolChoice("any")}, answer(TextPart("I would count")), "no-tool-call"),
        ({"tools": (TOOL,), "tool_choice": ToolChoice("any")}, answer(ToolCall("c", "count", '{"n": 1}')), None),
        (
            {"tools": (TOOL,), "tool_choice": ToolChoice("any")},
            answer(ToolCall("c", "count", '{"n"')),
            "invalid-tool-arguments",
        ),
        (
            {"tools": (TOOL,), "tool_choice": ToolChoice("any")},
            answer(ToolCall("c", "count", "{}")),
            "invalid-tool-arguments",
        ),
        ({"tools": (TOOL,), "tool_choice": ToolChoice("any")}, answer(ToolCall("c", "guess", "{}")), "unknown-tool"),
    ],
)
def test_problem(request_kw: dict[str, Any], response: ChatResponse, expected: str | None) -> None:
    assert problem(req(**request_kw), response) == expected


def test_plain_text_requests_are_not_checked() -> None:
    assert not wants_structure(req())
    assert not wants_structure(req(tools=(TOOL,)))  # auto tool choice: text is a fine answer
    assert wants_structure(req(response_format=ResponseFormat("json_object")))


@pytest.fixture(scope="module")
def cascade(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "open"}})
    with serve_gateway(config) as url:
        yield url


def ask_json(url: str, stream: bool = False) -> httpx.Response:
    body = {
        "model": "auto",
        "stream": stream,
        "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "Give me a JSON object."}],
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def test_invalid_json_from_the_open_tier_is_escalated_once(
    cascade: str, fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake_openai[0].script(Reply(text="Sure! Here it is: {oops"))
    fake_claude[0].script(Reply(text='{"colour": "teal"}'))
    resp = ask_json(cascade)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-tier"] == "closed"
    assert resp.headers["x-tiergate-route"] == "router:0.00<0.50;escalated:invalid-json"
    assert resp.json()["choices"][0]["message"]["content"] == '{"colour": "teal"}'


def test_valid_json_stays_on_the_open_tier(cascade: str, fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake_openai[0].script(Reply(text='{"ok": true}'))
    resp = ask_json(cascade)
    assert resp.headers["x-tiergate-tier"] == "open"
    assert "escalated" not in resp.headers["x-tiergate-route"]


def test_streams_are_not_escalated(cascade: str, fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake_openai[0].script(Reply(text="not json at all"))
    resp = ask_json(cascade, stream=True)
    assert resp.headers["x-tiergate-tier"] == "open"
    assert "escalated" not in resp.headers["x-tiergate-route"]
